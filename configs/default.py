"""Embedded default: a small iSQRT-COV ResNet trained on scikit-learn's digits.

Command (the README quick start):
  python main.py --config configs/default.py --workdir /tmp/gcp_default

The 1797 bundled 8 x 8 digits are written once as PNG files into an image
folder cache (1347 train / 450 val) and read through the same pipeline as
ImageNet: PNG decoding, random-resized crops (scale 0.35-1) and flips at
32 x 32 px. The model is `resnet_tiny_isqrt` widened to 16 channels: four
BasicBlock stages (strides 1, 2, 2, 1: an 8 x 8 last map, M = 64) -> 1x1
reduction to d = 32 -> covariance -> iSQRT (5 Newton-Schulz iterations) ->
triu (528-d) -> FC. SGD momentum 0.9, coupled weight decay 5e-4, LR 0.1
with steps at epochs 20 and 26, 30 epochs of batch 64. Results measured
with this command are in benchmarks/RESULTS.md ("Default run").
"""

from configs.common import base_config, model_config
from gcp_jax.model_config import ModelConfig


def get_config():
  config = base_config()
  config.model = model_config(ModelConfig(
      backbone="resnet_tiny", head="gcp", representation="isqrt", dim=32,
      num_iters=5, backbone_options={"width": 16}))
  config.data.name = "digits"
  config.data.image_size = 32
  config.data.crop_scale_min = 0.35
  config.data.global_batch_size = 64
  config.data.eval_batch_size = 128
  config.data.cache_decoded = True
  config.learning_rate = 0.1
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = "step"
  config.schedule.milestones = (20, 26)
  config.num_epochs = 30
  config.log_every_steps = 21
  config.eval_every_epochs = 5
  config.checkpoint_every_epochs = 5
  return config
