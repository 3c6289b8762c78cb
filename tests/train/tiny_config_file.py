"""Config file form of `tests.train.tiny.tiny_config`, for subprocess runs:
`--config tests/train/tiny_config_file.py:DIGITS_CACHE_DIR`."""

from tests.train.tiny import tiny_config


def get_config(data_dir: str):
  return tiny_config(data_dir)
