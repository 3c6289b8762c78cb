"""The papers' models by name: `create_model("resnet50_isqrt", 1000)`.

Each name stands for a `ModelConfig` (`published_config(name)`):

  <resnet>_<head>       resnet18 resnet34 resnet50 resnet101 resnet152
                        resnet_tiny, with
    gap                 GAP -> FC (layer4 stride 2)
    isqrt eig epn svpn  a "gcp" head with that representation, d = 256
    bcnn cov            (`cov` = plain covariance, representation "none")
    dropcov             the DropCov head, d = 256
    <gcp head>_d128     the same with d = 128 (TPAMI tables; not tiny)
  <deit>_<head>         deit_t deit_s deit_tiny_test, with
    cls                 class token -> FC
    gcp                 + iSQRT-COV of the reduced patch tokens, d = 64
                        (d = 8 on deit_tiny_test)
    dropcov             + transformer DropCov (H x w^2: 6 x 14^2 on deit_t,
                        6 x 24^2 on deit_s, 2 x 4^2 on deit_tiny_test)

`resnet_tiny` heads use d = 16. These names are what the checkpoint importer and the configs of
the papers' recipes use; any other network is a ModelConfig.
"""

import dataclasses
from typing import Any

from flax import linen as nn

from gcp_jax.models import registry
from gcp_jax.models.model_config import FIELDS, ModelConfig

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
           "resnet_tiny")
# Name suffix -> the representation of a "gcp" head.
GCP_SUFFIXES = {"isqrt": "isqrt", "eig": "eig", "epn": "epn", "svpn": "svpn",
                "bcnn": "bcnn", "cov": "none"}
VIT_HEADS = {
    "deit_t": {"dim": 64, "head_options": {"num_heads": 6, "head_dim": 14}},
    "deit_s": {"dim": 64, "head_options": {"num_heads": 6, "head_dim": 24}},
    "deit_tiny_test": {"dim": 8,
                       "head_options": {"num_heads": 2, "head_dim": 4}},
}
RUNTIME_KEYS = {f.name for f in dataclasses.fields(registry.Runtime)}


def _published() -> dict[str, ModelConfig]:
  names = {}
  for backbone in RESNETS:
    dims = (16,) if backbone == "resnet_tiny" else (256, 128)
    names[f"{backbone}_gap"] = ModelConfig(backbone, "gap")
    for dim in dims:
      tail = "_d128" if dim == 128 else ""
      names[f"{backbone}_dropcov{tail}"] = ModelConfig(backbone, "dropcov",
                                                       dim=dim)
      for suffix, rep in GCP_SUFFIXES.items():
        names[f"{backbone}_{suffix}{tail}"] = ModelConfig(backbone, "gcp",
                                                          rep, dim=dim)
  for backbone, vit in VIT_HEADS.items():
    names[f"{backbone}_cls"] = ModelConfig(backbone, "cls")
    names[f"{backbone}_gcp"] = ModelConfig(backbone, "token_gcp",
                                           dim=vit["dim"])
    names[f"{backbone}_dropcov"] = ModelConfig(
        backbone, "token_dropcov", head_options=vit["head_options"])
  return names


PUBLISHED = _published()


def model_names() -> list[str]:
  """All published names, sorted."""
  return sorted(PUBLISHED)


def published_config(name: str) -> ModelConfig:
  """The ModelConfig a published name stands for."""
  if name not in PUBLISHED:
    raise ValueError(f"Unknown model {name!r}; valid names are: "
                     f"{', '.join(model_names())}.")
  return PUBLISHED[name]


def create_model(name: str, num_classes: int, **overrides: Any) -> nn.Module:
  """Builds a published model, with some fields changed.

  Args:
    name: e.g. "resnet50_isqrt", "resnet50_dropcov_d128", "resnet_tiny_gap".
    num_classes: classifier outputs.
    **overrides: `ModelConfig` fields (dim=160, num_iters=3,
      representation_options={"method": "eigh"}: option mappings merge
      into the name's), `registry.Runtime` fields (dtype=jnp.bfloat16,
      bn_axis_name="data"), or single fields of the backbone (width=16,
      padding="same", last_stride=2) or of the head (eca_kernel_size=5).

  Returns:
    An unbound Flax module; call `init(rngs, images, train=False)`.
  """
  config = published_config(name)
  backbone = registry.BACKBONES[config.backbone].module
  head = registry.HEADS[config.head].module
  changes: dict[str, Any] = {"backbone_options": {}, "head_options": {}}
  runtime = {}
  for key, value in overrides.items():
    if key in FIELDS:
      changes[key] = {**changes[key], **value} if key in changes else value
    elif key in RUNTIME_KEYS:
      runtime[key] = value
    elif key in registry.option_names(backbone):
      changes["backbone_options"][key] = value
    elif key in registry.option_names(head):
      changes["head_options"][key] = value
    else:
      valid = (set(FIELDS) | RUNTIME_KEYS | registry.option_names(backbone)
               | registry.option_names(head))
      raise ValueError(f"Unknown override {key!r} for model {name}; valid "
                       f"overrides: {', '.join(sorted(valid))}.")
  return registry.build_model(config.replace(**changes), num_classes,
                              registry.Runtime(**runtime))
