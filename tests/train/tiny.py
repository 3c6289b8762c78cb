"""A tiny, fast variant of configs/default.py for tests."""

import ml_collections

from configs import default


def tiny_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  """resnet_tiny_isqrt (width 8, d=16) at 16 px, constant LR 0.4, 2 epochs
  of batch 64 (21 steps each)."""
  config = default.get_config()
  config.model_overrides = ml_collections.ConfigDict()
  config.data.data_dir = str(data_dir)
  config.data.image_size = 16
  config.learning_rate = 0.4
  config.schedule = {"name": "constant"}
  config.num_epochs = 2
  config.log_every_steps = 7
  config.eval_every_epochs = 1
  config.checkpoint_every_epochs = 1
  config.update(overrides)
  return config
