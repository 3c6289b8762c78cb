"""`create_model(name, num_classes, **changes)`: a published model name
(`gcp_jax.model_config.model_names()`, e.g. "resnet50_isqrt") built with
some fields changed.
"""

import dataclasses
from typing import Any

from flax import linen as nn

from gcp_jax.model_config import FIELDS, published_config
from gcp_jax.models import registry

RUNTIME_KEYS = {f.name for f in dataclasses.fields(registry.Runtime)}


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
