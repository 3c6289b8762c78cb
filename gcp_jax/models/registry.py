"""Model names -> constructors: `create_model(name, num_classes, **overrides)`.

Names are `<backbone>_<head>`:

  ResNets    resnet18 resnet34 resnet50 resnet101 resnet152
             resnet_tiny (one BasicBlock per stage, width 8, 3x3 stem, for
             8x8..32x32 images and tests)
    heads    gap                           GAP -> FC, layer4 stride 2
             isqrt eig epn svpn bcnn cov   GCP with that representation
                                           (`cov` = plain covariance), d=256
             dropcov                       DropCov, d=256
             <any GCP head>_d128           the same with d=128 (TPAMI tables)
  ViTs       deit_t deit_s (224 px, patch 16), deit_tiny_test (32 px, patch 8,
             2 blocks of width 32, for tests)
    heads    cls      class token -> FC
             gcp      + iSQRT-COV of the reduced patch tokens (d=64)
             dropcov  + transformer DropCov (H x w^2: 6x14^2 for deit_t,
                      6x24^2 for deit_s)

GCP and DropCov ResNets use a stride-1 layer4; `resnet_tiny_*` heads use
d=16. Overrides go to the backbone (e.g. `dtype`, `bn_axis_name`,
`last_stride`, `padding`, `drop_path_rate`) or the head (e.g. `dim`,
`representation_options`, `rate_axis_name`); an unknown key is an error that
lists the valid ones.
"""

import dataclasses
import functools
from typing import Any, Callable

from flax import linen as nn

from gcp_jax.models import heads, resnet, token_heads, vit

RESNET_STAGES = {
    "resnet18": ((2, 2, 2, 2), resnet.BasicBlock),
    "resnet34": ((3, 4, 6, 3), resnet.BasicBlock),
    "resnet50": ((3, 4, 6, 3), resnet.Bottleneck),
    "resnet101": ((3, 4, 23, 3), resnet.Bottleneck),
    "resnet152": ((3, 8, 36, 3), resnet.Bottleneck),
    "resnet_tiny": ((1, 1, 1, 1), resnet.BasicBlock),
}
TINY_BACKBONE = {"width": 8, "small_input": True}
TINY_DIM = 16

VIT_HEADS = {"cls": token_heads.ClsHead, "gcp": token_heads.TokenGCPHead,
             "dropcov": token_heads.TokenDropCovHead}
VIT_ARCHS = {
    "deit_t": dict(embed_dim=192, depth=12, num_heads=3, drop_path_rate=0.1,
                   heads={"dropcov": {"num_heads": 6, "head_dim": 14}}),
    "deit_s": dict(embed_dim=384, depth=12, num_heads=6, drop_path_rate=0.1,
                   heads={"dropcov": {"num_heads": 6, "head_dim": 24}}),
    "deit_tiny_test": dict(image_size=32, patch_size=8, embed_dim=32, depth=2,
                           num_heads=2, drop_path_rate=0.1,
                           heads={"gcp": {"dim": 8},
                                  "dropcov": {"num_heads": 2, "head_dim": 4}}),
}

GCP_REPRESENTATIONS = {"isqrt": "isqrt", "eig": "eig", "epn": "epn",
                       "svpn": "svpn", "bcnn": "bcnn", "cov": "none"}
DEFAULT_OPTIONS = {"isqrt": (("num_iters", 5),)}


def _head_spec(head_name: str, dim: int) -> tuple[type[nn.Module], dict, int]:
  """-> (head class, head kwargs, layer4 stride)."""
  if head_name == "gap":
    return heads.GAPHead, {}, 2
  if head_name == "dropcov":
    return heads.DropCovHead, {"dim": dim}, 1
  rep = GCP_REPRESENTATIONS[head_name]
  return heads.GCPHead, {"dim": dim, "representation": rep,
                         "representation_options":
                             DEFAULT_OPTIONS.get(rep, ())}, 1


def _build(name: str, model_cls: type[nn.Module], model_kwargs: dict,
           head_cls: type[nn.Module], head_kwargs: dict, num_classes: int,
           overrides: dict[str, Any]) -> nn.Module:
  """Routes each override to the backbone or the head (or both, for
  `bn_axis_name`) and builds the model; unknown keys are an error."""
  def fields(cls):
    return {f.name for f in dataclasses.fields(cls)} - {
        "parent", "name", "head", "num_classes", "stage_sizes", "block_cls"}
  head_fields, model_fields = fields(head_cls), fields(model_cls)
  for key, value in overrides.items():
    if key not in head_fields | model_fields:
      raise ValueError(
          f"Unknown override {key!r} for model {name}; valid overrides: "
          f"{', '.join(sorted(head_fields | model_fields))}.")
    if key == "representation_options" and isinstance(value, dict):
      value = tuple(sorted(value.items()))
    if key in head_fields:
      head_kwargs[key] = value
    if key in model_fields:
      model_kwargs[key] = value
  return model_cls(head=head_cls(num_classes, **head_kwargs), **model_kwargs)


def _build_resnet(backbone: str, head_name: str, default_dim: int,
                  num_classes: int, **overrides: Any) -> nn.Module:
  stages, block = RESNET_STAGES[backbone]
  head_cls, head_kwargs, last_stride = _head_spec(head_name, default_dim)
  model_kwargs = dict(TINY_BACKBONE) if backbone == "resnet_tiny" else {}
  model_kwargs.update(stage_sizes=stages, block_cls=block,
                      last_stride=last_stride)
  name = f"{backbone}_{head_name}" + ("_d128" if default_dim == 128 else "")
  return _build(name, resnet.ResNet, model_kwargs, head_cls, head_kwargs,
                num_classes, overrides)


def _build_vit(backbone: str, head_name: str, num_classes: int,
               **overrides: Any) -> nn.Module:
  # ViTs normalise with LayerNorm only: there are no BatchNorm statistics
  # to synchronise, so the training loop's `bn_axis_name` does not apply.
  overrides.pop("bn_axis_name", None)
  arch = dict(VIT_ARCHS[backbone])
  head_cls = VIT_HEADS[head_name]
  head_kwargs = dict(arch.pop("heads").get(head_name, {}))
  return _build(f"{backbone}_{head_name}", vit.VisionTransformer, arch,
                head_cls, head_kwargs, num_classes, overrides)


def _registry() -> dict[str, Callable[..., nn.Module]]:
  names = {}
  for backbone in RESNET_STAGES:
    base_dim = TINY_DIM if backbone == "resnet_tiny" else 256
    for head_name in ("gap", "dropcov", *GCP_REPRESENTATIONS):
      names[f"{backbone}_{head_name}"] = functools.partial(
          _build_resnet, backbone, head_name, base_dim)
      if head_name != "gap" and backbone != "resnet_tiny":
        names[f"{backbone}_{head_name}_d128"] = functools.partial(
            _build_resnet, backbone, head_name, 128)
  for backbone in VIT_ARCHS:
    for head_name in VIT_HEADS:
      names[f"{backbone}_{head_name}"] = functools.partial(
          _build_vit, backbone, head_name)
  return names


MODELS = _registry()


def model_names() -> list[str]:
  """All registered names, sorted."""
  return sorted(MODELS)


def create_model(name: str, num_classes: int, **overrides: Any) -> nn.Module:
  """Builds a registered model.

  Args:
    name: e.g. "resnet50_isqrt", "resnet50_dropcov_d128", "resnet_tiny_gap".
    num_classes: classifier outputs.
    **overrides: backbone or head fields, e.g. dtype=jnp.bfloat16,
      bn_axis_name="data", dim=160, representation_options={"num_iters": 3}.

  Returns:
    An unbound Flax module; call `init(rngs, images, train=False)`.
  """
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; valid names are: "
                     f"{', '.join(model_names())}.")
  return MODELS[name](num_classes, **overrides)
