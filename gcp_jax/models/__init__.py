"""Flax Linen models: ResNet and ViT backbones with GAP / GCP / DropCov heads.

Synopsis:
  from gcp_jax.models import create_model, model_names
  model = create_model("resnet50_isqrt", num_classes=1000)
  variables = model.init(rngs, images, train=False)
"""

from gcp_jax.models.registry import create_model, model_names

__all__ = ["create_model", "model_names"]
