"""Flax Linen models: ResNet, MobileNetV2, ShuffleNetV2 and ViT backbones
with GAP / GCP / DropCov heads.

Synopsis:
  from gcp_jax.models import ModelConfig, build_model, create_model
  model = build_model(ModelConfig(backbone="resnet50", head="gcp",
                                  representation="isqrt", dim=256,
                                  num_iters=5), num_classes=1000)
  model = create_model("resnet50_isqrt", num_classes=1000)   # the same
  variables = model.init(rngs, images, train=False)

  registry.py      BACKBONES, HEADS, build_model(ModelConfig, num_classes)
  published.py     create_model(published name, num_classes, **changes)

`ModelConfig` (backbone, head, representation, dim, num_iters and option
fields, each with its one default) and the papers' model names live in
`gcp_jax.model_config`, which imports no JAX (config files use it).
"""

from gcp_jax.model_config import ModelConfig, model_names, published_config
from gcp_jax.models.published import create_model
from gcp_jax.models.registry import Runtime, build_model

__all__ = ["ModelConfig", "Runtime", "build_model", "create_model",
           "model_names", "published_config"]
