"""`ModelConfig`: which network to build, as explicit fields.

A model is a backbone, a head on its output, and, for second-order heads, a
representation with its options:

  backbone                key of `registry.BACKBONES` ("resnet50", "deit_s")
  head                    key of `registry.HEADS` ("gap", "gcp", "dropcov";
                          on ViTs "cls", "token_gcp", "token_dropcov")
  representation          key of `gcp_jax.ops.REPRESENTATIONS` ("isqrt",
                          "eig", "epn", "svpn", "bcnn", "none"); read by the
                          "gcp" and "token_gcp" heads
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

Each field's default is written here once. `gcp_jax.models.registry.
build_model` turns a ModelConfig into a Flax module; `published.py` names
the papers' models ("resnet50_isqrt") as ModelConfigs. The method of each
piece: docs/method.md.
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
