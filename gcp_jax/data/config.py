"""The data config: its fields, their defaults and their validation.

Kept free of TensorFlow so that loading a config file stays fast.

Synopsis:
  config = default_data_config()         # ml_collections.ConfigDict
  config.name, config.data_dir = "image_folder", "/data/cub"
  settings = DataSettings.from_config(config)   # validated, typed

Fields:
  name               "digits" | "image_folder" | "imagenet2012"
  data_dir           image_folder: the folder holding train/ and val/;
                     imagenet2012: the tfds data_dir ("" = tfds' default);
                     digits: its PNG cache ("" = ~/.cache/gcp_jax/digits_v1)
  image_size         side S of the square network input
  resize_size        short side before the centre crop of evaluation and of
                     "resize_crop_flip"; 0 = round(S / 0.875) (256 for 224)
  train_augment      "inception_crop" (random-resized crop + flip),
                     "resize_crop_flip" (the fine-grained recipe) or "none"
                     (the evaluation transform)
  crop_scale_min     smallest area fraction of the inception crop
  global_batch_size  training batch over all processes; an epoch is
                     num_train // global_batch_size full batches
  eval_batch_size    evaluation batch over all processes; the last batch is
                     padded and masked, so every example counts once
  eval_views         views per evaluation image whose logits are averaged:
                     1 = the centre crop, 2 = centre crop + its mirror image
                     (fast-MPN-COV fine-grained), 10 = torchvision TenCrop
                     (4 corners + centre, and mirrored; fast-MPN-COV's final
                     ImageNet evaluation)
  shuffle_buffer     tf.data shuffle buffer of imagenet2012 (image folders
                     are permuted in full every epoch)
  seed               data order and augmentation
  skip_corrupt       skip unreadable images (and count them) instead of
                     stopping with an error naming the file
  cache_decoded      decode every image once and keep it in memory (image
                     folders and digits only; for small data sets)
  num_parallel_calls decoding threads; -1 = tf.data.AUTOTUNE
"""

import dataclasses

import ml_collections

from gcp_jax.errors import GcpJaxError

DATASET_NAMES = ("digits", "image_folder", "imagenet2012")
TRAIN_AUGMENTATIONS = ("inception_crop", "resize_crop_flip", "none")
EVAL_VIEWS = (1, 2, 10)
EVAL_CROP_FRACTION = 0.875  # centre crop 224 of a 256 short side


class DataError(GcpJaxError, ValueError):
  """Unusable data or data config; the message names the culprit and fix."""


def default_data_config() -> ml_collections.ConfigDict:
  """The defaults: the embedded digits at a CPU-friendly 32 px."""
  return ml_collections.ConfigDict({
      "name": "digits",
      "data_dir": "",
      "image_size": 32,
      "resize_size": 0,
      "train_augment": "inception_crop",
      "crop_scale_min": 0.08,
      "global_batch_size": 128,
      "eval_batch_size": 128,
      "eval_views": 1,
      "shuffle_buffer": 16_384,
      "seed": 0,
      "skip_corrupt": False,
      "cache_decoded": False,
      "num_parallel_calls": -1,
  })


@dataclasses.dataclass(frozen=True)
class DataSettings:
  """A validated data config (fields as in the module docstring);
  `resize_size` is resolved (never 0)."""
  name: str
  data_dir: str
  image_size: int
  resize_size: int
  train_augment: str
  crop_scale_min: float
  global_batch_size: int
  eval_batch_size: int
  eval_views: int
  shuffle_buffer: int
  seed: int
  skip_corrupt: bool
  cache_decoded: bool
  num_parallel_calls: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "DataSettings":
    """Fills missing fields from `default_data_config()` and checks values.

    Raises:
      DataError: an unknown field or a bad value, named with the fix.
    """
    values = default_data_config().to_dict()
    unknown = sorted(set(config.keys()) - set(values))
    if unknown:
      raise DataError(f"Unknown data config fields {unknown}; valid fields: "
                      f"{sorted(values)}.")
    values.update(config.to_dict())
    if values["resize_size"] == 0:
      values["resize_size"] = int(round(values["image_size"]
                                        / EVAL_CROP_FRACTION))
    settings = cls(**values)
    settings._check()
    return settings

  def _check(self) -> None:
    if self.name not in DATASET_NAMES:
      raise DataError(f"Unknown data set data.name={self.name!r}; valid "
                      f"names: {', '.join(DATASET_NAMES)}.")
    if self.train_augment not in TRAIN_AUGMENTATIONS:
      raise DataError(
          f"Unknown data.train_augment={self.train_augment!r}; valid: "
          f"{', '.join(TRAIN_AUGMENTATIONS)}.")
    if self.eval_views not in EVAL_VIEWS:
      raise DataError(f"data.eval_views={self.eval_views} is not supported; "
                      f"use 1 (centre crop), 2 (centre + mirror) or 10 "
                      f"(TenCrop).")
    if self.image_size < 1:
      raise DataError(f"data.image_size={self.image_size} must be positive.")
    if self.resize_size < self.image_size:
      raise DataError(
          f"data.resize_size={self.resize_size} is smaller than "
          f"data.image_size={self.image_size}: the centre crop would not "
          f"fit; use resize_size >= image_size (0 = image_size / 0.875).")
    if not 0.0 < self.crop_scale_min <= 1.0:
      raise DataError(f"data.crop_scale_min={self.crop_scale_min} must be "
                      f"in (0, 1].")
    for field in ("global_batch_size", "eval_batch_size", "shuffle_buffer"):
      if getattr(self, field) < 1:
        raise DataError(f"data.{field}={getattr(self, field)} must be "
                        f"positive.")
    if self.seed < 0:
      raise DataError(f"data.seed={self.seed} must be >= 0.")
    if self.cache_decoded and self.name == "imagenet2012":
      raise DataError("data.cache_decoded=True keeps every decoded image in "
                      "memory and is meant for small image folders, not "
                      "imagenet2012; set it to False.")

  def check_process_split(self, process_count: int) -> None:
    """Raises DataError unless both batches split evenly over processes."""
    for field in ("global_batch_size", "eval_batch_size"):
      size = getattr(self, field)
      if size % process_count:
        raise DataError(
            f"data.{field}={size} is not divisible by the {process_count} "
            f"processes; use a multiple of {process_count}.")
