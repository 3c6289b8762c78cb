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
  steps_per_epoch    0 = that full pass; N > 0 = an epoch is the first N
                     batches of the epoch's shuffled order (each epoch a new
                     order), so that a recipe's schedule, evaluation and
                     checkpoint cadence in epochs run on a shorter budget
                     (the convergence study of gcp_jax.studies.convergence);
                     at most the full pass
  eval_batch_size    evaluation batch over all processes; the last batch is
                     padded and masked, so every example counts once
  eval_views         views per evaluation image whose logits are averaged:
                     1 = the centre crop, 2 = centre crop + its mirror image
                     (fast-MPN-COV fine-grained), 10 = torchvision TenCrop
                     (4 corners + centre, and mirrored; fast-MPN-COV's final
                     ImageNet evaluation)
  randaugment        timm RandAugment policy applied to training images after
                     the crop and flip, e.g. "rand-m9-mstd0.5-inc1" (DeiT);
                     "" = off (`parse_randaugment` gives the grammar)
  color_jitter       (brightness, contrast, saturation) strengths of
                     torchvision's ColorJitter on the training crop
                     (`color_jitter.color_jitter`; GCP_Optimization's
                     ShuffleNetV2: 0.4 each); (0, 0, 0) = off
  random_erasing     probability of timm's RandomErasing of a training image
                     after normalisation (one box, area 2%..1/3, aspect
                     0.3..3.3, filled with N(0, 1) noise per pixel: DeiT's
                     0.25 'pixel' mode); 0 = off
  mixup_alpha        mixup's Beta(alpha, alpha); 0 = no mixup
  cutmix_alpha       CutMix's Beta(alpha, alpha); 0 = no CutMix. Mixup and
                     CutMix run on device in the train step
                     (`gcp_jax.data.mixing.mix_batch`, timm 'batch' mode;
                     DeiT: 0.8 and 1.0); both 0 = off
  mix_prob           probability that a batch is mixed at all
  mix_switch_prob    probability of CutMix rather than mixup when both
                     alphas are positive
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
RANDAUGMENT_EXAMPLE = "rand-m9-mstd0.5-inc1"
EVAL_CROP_FRACTION = 0.875  # centre crop 224 of a 256 short side


class DataError(GcpJaxError, ValueError):
  """Unusable data or data config; the message names the culprit and fix."""


@dataclasses.dataclass(frozen=True)
class RandAugmentSpec:
  """A parsed timm RandAugment policy (`parse_randaugment`).

  Attributes:
    num_layers: ops applied per image (timm 'n', default 2).
    magnitude: mean magnitude in [0, 10] (timm 'm', default 10).
    magnitude_std: std of the per-op Gaussian magnitude noise (timm
      'mstd', default 0 = fixed magnitude).
    increasing: use the ops whose strength grows with the magnitude
      (timm 'inc1'; default off).
  """
  num_layers: int = 2
  magnitude: int = 10
  magnitude_std: float = 0.0
  increasing: bool = False


def parse_randaugment(policy: str) -> RandAugmentSpec:
  """Parses a timm RandAugment string such as "rand-m9-mstd0.5-inc1".

  Grammar (timm 0.4.12's `rand_augment_transform`): "rand" followed by
  "-"-separated sections, each a key and a number: m<int 0..10> magnitude,
  n<int >= 0> ops per image, mstd<float >= 0> magnitude noise, inc<0|1>
  increasing ops. Unlike timm, "inc0" means off (timm takes any "inc"
  value as on), and unknown sections (timm's "w" choice weights, "mmax")
  are errors rather than ignored.

  Raises:
    DataError: a malformed policy, naming the bad section.
  """
  sections = policy.split("-")
  if sections[0] != "rand":
    raise DataError(f"data.randaugment={policy!r} must start with 'rand', "
                    f"e.g. {RANDAUGMENT_EXAMPLE!r}, or be '' (off).")
  values = {}
  parsers = {"m": int, "n": int, "mstd": float, "inc": int}
  for section in sections[1:]:
    key = section[:len(section) - len(section.lstrip(
        "abcdefghijklmnopqrstuvwxyz"))]
    number = section[len(key):]
    try:
      if key not in parsers:
        raise ValueError(key)
      values[key] = parsers[key](number)
    except ValueError:
      raise DataError(
          f"data.randaugment={policy!r}: cannot read section {section!r}; "
          f"sections are m<int 0..10>, n<int>, mstd<float>, inc<0|1>, "
          f"e.g. {RANDAUGMENT_EXAMPLE!r}.") from None
  spec = RandAugmentSpec(
      num_layers=values.get("n", 2), magnitude=values.get("m", 10),
      magnitude_std=values.get("mstd", 0.0),
      increasing=bool(values.get("inc", 0)))
  if (not 0 <= spec.magnitude <= 10 or spec.num_layers < 0
      or not 0.0 <= spec.magnitude_std < float("inf")
      or values.get("inc", 0) not in (0, 1)):
    raise DataError(f"data.randaugment={policy!r} is out of range: need "
                    f"m in 0..10, n >= 0, finite mstd >= 0, inc 0 or 1.")
  return spec


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
      "steps_per_epoch": 0,
      "eval_batch_size": 128,
      "eval_views": 1,
      "randaugment": "",
      "color_jitter": (0.0, 0.0, 0.0),
      "random_erasing": 0.0,
      "mixup_alpha": 0.0,
      "cutmix_alpha": 0.0,
      "mix_prob": 1.0,
      "mix_switch_prob": 0.5,
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
  steps_per_epoch: int
  eval_batch_size: int
  eval_views: int
  randaugment: str
  color_jitter: tuple[float, float, float]
  random_erasing: float
  mixup_alpha: float
  cutmix_alpha: float
  mix_prob: float
  mix_switch_prob: float
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
    if self.randaugment:
      parse_randaugment(self.randaugment)  # raises on a bad policy
    jitter = self.color_jitter
    if (not isinstance(jitter, (tuple, list)) or len(jitter) != 3
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                   and 0.0 <= x < float("inf") for x in jitter)):
      raise DataError(f"data.color_jitter={jitter!r} must be three "
                      f"strengths >= 0 (brightness, contrast, saturation), "
                      f"e.g. (0.4, 0.4, 0.4); (0, 0, 0) = off.")
    if not 0.0 <= self.random_erasing <= 1.0:
      raise DataError(f"data.random_erasing={self.random_erasing} is a "
                      f"probability; use a value in [0, 1] (0 = off).")
    for field in ("mixup_alpha", "cutmix_alpha"):
      if not 0.0 <= getattr(self, field) < float("inf"):
        raise DataError(f"data.{field}={getattr(self, field)} must be >= 0 "
                        f"(0 = off).")
    for field in ("mix_prob", "mix_switch_prob"):
      if not 0.0 <= getattr(self, field) <= 1.0:
        raise DataError(f"data.{field}={getattr(self, field)} is a "
                        f"probability; use a value in [0, 1].")
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
    if self.steps_per_epoch < 0:
      raise DataError(f"data.steps_per_epoch={self.steps_per_epoch} must be "
                      f">= 0 (0 = one full pass over the training data).")
    if self.seed < 0:
      raise DataError(f"data.seed={self.seed} must be >= 0.")
    if self.cache_decoded and self.name == "imagenet2012":
      raise DataError("data.cache_decoded=True keeps every decoded image in "
                      "memory and is meant for small image folders, not "
                      "imagenet2012; set it to False.")

  @property
  def randaugment_spec(self) -> RandAugmentSpec | None:
    """The parsed `randaugment` policy, None when off.

    Raises:
      DataError: a malformed policy string.
    """
    if not self.randaugment:
      return None
    return parse_randaugment(self.randaugment)

  @property
  def color_jitter_strengths(self) -> tuple[float, float, float] | None:
    """`color_jitter` as floats, None when off."""
    strengths = tuple(float(x) for x in self.color_jitter)
    return strengths if any(strengths) else None

  @property
  def mixing(self) -> bool:
    """Whether the train step should mix batches (`mixing.mix_batch`)."""
    return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and (
        self.mix_prob > 0)

  def check_process_split(self, process_count: int) -> None:
    """Raises DataError unless both batches split evenly over processes."""
    for field in ("global_batch_size", "eval_batch_size"):
      size = getattr(self, field)
      if size % process_count:
        raise DataError(
            f"data.{field}={size} is not divisible by the {process_count} "
            f"processes; use a multiple of {process_count}.")
