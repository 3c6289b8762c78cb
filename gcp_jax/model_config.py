"""`ModelConfig`: which network to build, as explicit fields.

A model is a backbone, a head on its output, and, for second-order heads, a
representation with its options:

  backbone                key of `registry.BACKBONES` ("resnet50",
                          "vgg16_bn", "deit_s")
  head                    key of `registry.HEADS` ("gap", "gcp", "dropcov";
                          on ViTs "cls", "token_gcp", "token_dropcov")
  representation          key of `gcp_jax.ops.REPRESENTATIONS` ("isqrt",
                          "eig", "epn", "svpn", "bcnn", "cbp", "none"); read
                          by the "gcp" and "token_gcp" heads
  dim                     d, channels after the reduction before pooling
                          (256 in iSQRT-COV / GCP_Optimization, 128 in the
                          TPAMI tables)
  num_iters               Newton-Schulz iterations of the "isqrt"
                          representation (5 in iSQRT-COV); other
                          representations take their own options
  representation_options  further keyword options of the representation's
                          normalisation, e.g. {"method": "eigh"} for isqrt,
                          {"alpha": 0.5, "num_iters": 1} for svpn
  backbone_options        fields of the backbone module, e.g. {"width": 16,
                          "padding": "same", "last_stride": 2}
  head_options            fields of the head module beyond the above, e.g.
                          {"num_heads": 6, "head_dim": 14} for token_dropcov

Each field's default is written here once. `gcp_jax.models.build_model`
turns a ModelConfig into a Flax module.

The papers' models also have names, each standing for a ModelConfig
(`published_config(name)`, `model_names()`):

  <resnet>_<head>       resnet18 resnet34 resnet50 resnet101 resnet152
                        resnet_tiny, with
    gap                 GAP -> FC (layer4 stride 2)
    isqrt eig epn svpn  a "gcp" head with that representation, d = 256
    bcnn cov            (`cov` = plain covariance, representation "none")
    dropcov             the DropCov head, d = 256
    <gcp head>_d128     the same with d = 128 (TPAMI tables; not tiny)
  se_resnet50_<head>    the TPAMI seed's MindSpore SE-ResNet-50, with gap,
                        isqrt (d = 256) and isqrt_d128
  <deit>_<head>         deit_t deit_s deit_tiny_test, with
    cls                 class token -> FC
    gcp                 + iSQRT-COV of the reduced patch tokens, d = 64
                        (d = 8 on deit_tiny_test)
    dropcov             + transformer DropCov (H x w^2: 6 x 14^2 on deit_t,
                        6 x 24^2 on deit_s, 2 x 4^2 on deit_tiny_test)
  <deit_drop>_<head>    DropCov's own transformer (conv tokenizer):
                        deit_drop_tiny deit_drop_small deit_drop_base
                        deit_drop_tiny_test, the same three heads (DropCov
                        H x w^2: 6 x 14^2, 6 x 24^2, 12 x 24^2, 2 x 4^2)
                        with the reference's head details (REFERENCE_*)

  vgg16_bn_<head>       VGG-16-BN without its fifth max-pool (fast-MPN-COV)
    gap                 GAP -> FC (fast-MPN-COV's GAvP fine-tuning model)
    isqrt               fast-MPN-COV's ImageNet `mpncovvgg16_bn`: iSQRT-COV,
                        d = 256, then FC 4096 -> FC 4096 -> FC (dropout 0.5)
    bcnn cbp            B-CNN (C^2 = 262144) and compact bilinear pooling
                        (D = 8192) of the 512 conv5_3 channels, no reduction
  <mobile>_<head>       mobilenet_v2 shufflenet_v2 (1.0x; GCP_Optimization;
                        last stride 2, 7 x 7 maps, for every head), with
    gap                 GAP -> FC (MobileNetV2: dropout 0.2 before the FC)
    isqrt               ReLU6 reduction to d = 256 -> iSQRT-COV -> FC
                        (MobileNetV2: dropout 0.2 before the FC)
    isqrt_d128          the same with d = 128 (mobilenet_v2 only: the
                        reference has no ShuffleNetV2 with d = 128)

`resnet_tiny` heads use d = 16. The configs of the papers' recipes and the
checkpoint importer use these names; any other network is a ModelConfig.
This module imports no JAX, so config files can use it while flags are
parsed. The method of each piece: docs/method.md.
"""

import dataclasses
from typing import Any, Mapping

Options = tuple[tuple[str, Any], ...]
OPTION_FIELDS = ("representation_options", "backbone_options",
                 "head_options")


def as_options(options: Mapping[str, Any] | Options) -> Options:
  """A mapping (or pairs) as (key, value) pairs sorted by key: hashable,
  as Flax module fields must be."""
  items = options.items() if isinstance(options, Mapping) else options
  return tuple(sorted(items, key=lambda item: item[0]))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """One network, field by field (see the module docstring)."""
  backbone: str = "resnet50"
  head: str = "gcp"
  representation: str = "isqrt"
  dim: int = 256
  num_iters: int = 5
  representation_options: Options = ()
  backbone_options: Options = ()
  head_options: Options = ()

  def __post_init__(self):
    for name in OPTION_FIELDS:
      object.__setattr__(self, name, as_options(getattr(self, name)))

  def replace(self, **changes: Any) -> "ModelConfig":
    """A copy with `changes`; option fields given as mappings are merged
    into the existing options key by key."""
    for name in OPTION_FIELDS:
      if name in changes:
        changes[name] = {**dict(getattr(self, name)),
                         **dict(as_options(changes[name]))}
    return dataclasses.replace(self, **changes)

  def as_dict(self) -> dict[str, Any]:
    """Plain dict, option fields as dicts (for config files and JSON)."""
    out = dataclasses.asdict(self)
    for name in OPTION_FIELDS:
      out[name] = dict(getattr(self, name))
    return out


FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))


def from_mapping(values: Mapping[str, Any]) -> ModelConfig:
  """A ModelConfig from a mapping such as `config.model.to_dict()`; an
  unknown key is a ValueError that lists the valid ones."""
  unknown = sorted(set(values) - set(FIELDS))
  if unknown:
    raise ValueError(
        f"Unknown model config key(s) {', '.join(unknown)}; valid keys: "
        f"{', '.join(FIELDS)}.")
  return ModelConfig(**values)


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
# DropCov's own transformer presets (H, w: Transformers/src/transformer.py).
# Their heads are the reference's: Linear init N(0, 0.02) / bias 0, and the
# DropCov head's 3Hw projection and scalar centring (token_heads).
REFERENCE_HEAD = {"linear_init": "timm"}
REFERENCE_DROPCOV = {"projections": 3, "centering": "scalar",
                     **REFERENCE_HEAD}
VIT_HEADS.update({
    name: {"dim": dim, "reference": True,
           "head_options": {"num_heads": h, "head_dim": w}}
    for name, dim, h, w in (("deit_drop_tiny", 64, 6, 14),
                            ("deit_drop_small", 64, 6, 24),
                            ("deit_drop_base", 64, 12, 24),
                            ("deit_drop_tiny_test", 8, 2, 4))})


# GCP_Optimization src/models: MobileNetV2{,_MPNCOV,_MPNCOV_128}.py and
# ShuffleNetV2{,_MPNCOV}.py -> the d of their GCP variants.
MOBILE_GCP_DIMS = {"mobilenet_v2": (256, 128), "shufflenet_v2": (256,)}


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
  names["se_resnet50_gap"] = ModelConfig("se_resnet50", "gap")
  for dim in (256, 128):
    tail = "_d128" if dim == 128 else ""
    names[f"se_resnet50_isqrt{tail}"] = ModelConfig("se_resnet50", "gcp",
                                                    "isqrt", dim=dim)
  for backbone, vit in VIT_HEADS.items():
    ref = vit.get("reference", False)
    plain = REFERENCE_HEAD if ref else {}
    names[f"{backbone}_cls"] = ModelConfig(backbone, "cls",
                                           head_options=plain)
    names[f"{backbone}_gcp"] = ModelConfig(backbone, "token_gcp",
                                           dim=vit["dim"], head_options=plain)
    names[f"{backbone}_dropcov"] = ModelConfig(
        backbone, "token_dropcov",
        head_options={**vit["head_options"],
                      **(REFERENCE_DROPCOV if ref else {})})
  names.update(VGG_NAMES)
  for backbone, dims in MOBILE_GCP_DIMS.items():
    names[f"{backbone}_gap"] = ModelConfig(backbone, "gap")
    for dim in dims:
      tail = "_d128" if dim == 128 else ""
      names[f"{backbone}_isqrt{tail}"] = ModelConfig(backbone, "gcp", dim=dim)
  return names


VGG_NAMES = {
    "vgg16_bn_gap": ModelConfig("vgg16_bn", "gap"),
    "vgg16_bn_isqrt": ModelConfig(
        "vgg16_bn", "gcp", "isqrt", dim=256,
        head_options={"hidden_dims": (4096, 4096)}),
    "vgg16_bn_bcnn": ModelConfig("vgg16_bn", "gcp", "bcnn",
                                 head_options={"reduce": False}),
    "vgg16_bn_cbp": ModelConfig("vgg16_bn", "gcp", "cbp",
                                head_options={"reduce": False}),
}
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
