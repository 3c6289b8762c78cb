"""Image preprocessing in TensorFlow: decoding, crops, flips, normalisation.

Pure functions of their inputs (the random ones take an explicit stateless
seed, shape (2,) int64), so they give the same result eagerly and inside
`tf.data.Dataset.map`, and the same result again for the same seed. They follow
the torchvision transforms of the GCP papers' recipes (docs/method.md §8.1,
§8.5): `RandomResizedCrop` + flip, `Resize` (short side) + `CenterCrop`, and the
ImageNet mean/std normalisation. `train_image` optionally adds the DeiT recipe's
RandAugment (`randaugment`) and random erasing (`erasing`).

Synopsis:
  image = decode_image(tf.io.read_file(path))          # uint8 (H, W, 3)
  x = train_image(image, seed, augment="inception_crop", image_size=224,
                  resize_size=256)                      # float32 (224, 224, 3)
  y = eval_image(image, image_size=224, resize_size=256)

`train_image` and `eval_image` also take the encoded bytes (a scalar
tf.string); the random crop of a JPEG is then decoded fused with the crop
(`tf.io.decode_and_crop_jpeg`), which decodes only the window.
"""

import math

from gcp_jax.data.tensorflow_cpu import tf
from gcp_jax.data import color_jitter, erasing, randaugment
from gcp_jax.data.config import TRAIN_AUGMENTATIONS, RandAugmentSpec

MEAN_RGB = (0.485, 0.456, 0.406)
STDDEV_RGB = (0.229, 0.224, 0.225)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
  """Decodes JPEG / PNG bytes to RGB (grey is repeated, alpha dropped).

  Args:
    encoded: scalar tf.string.

  Returns:
    uint8 (H, W, 3).
  """
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def random_crop_window(image_shape: tf.Tensor, seed: tf.Tensor,
                       scale_min: float = 0.08) -> tf.Tensor:
  """torchvision's `RandomResizedCrop` window.

  Up to CROP_ATTEMPTS draws of an area fraction in U(scale_min, 1) and a
  log-uniform aspect ratio w / h in CROP_RATIO; the first window that fits
  is placed uniformly at random. If none fits, the whole image clipped to
  the ratio range, centred.

  Args:
    image_shape: int (2,) or longer, (H, W, ...).
    seed: (2,) int stateless seed.
    scale_min: smallest area fraction, in (0, 1].

  Returns:
    int32 (4,): [top, left, height, width].
  """
  height = tf.cast(image_shape[0], tf.float32)
  width = tf.cast(image_shape[1], tf.float32)
  seeds = tf.random.experimental.stateless_split(seed, 4)

  def uniform(key, low=0.0, high=1.0):
    return tf.random.stateless_uniform([CROP_ATTEMPTS], key, low, high)

  area = height * width * uniform(seeds[0], scale_min, 1.0)
  aspect = tf.exp(uniform(seeds[1], math.log(CROP_RATIO[0]),
                          math.log(CROP_RATIO[1])))
  w = tf.round(tf.sqrt(area * aspect))
  h = tf.round(tf.sqrt(area / aspect))
  fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  top = tf.floor(uniform(seeds[2]) * (height - h + 1))
  left = tf.floor(uniform(seeds[3]) * (width - w + 1))
  # The fallback, after every attempt failed.
  ratio = width / height
  fallback_w = tf.where(ratio > CROP_RATIO[1],
                        tf.round(height * CROP_RATIO[1]), width)
  fallback_h = tf.where(ratio < CROP_RATIO[0],
                        tf.round(width / CROP_RATIO[0]), height)
  fallback = tf.stack([tf.floor((height - fallback_h) / 2),
                       tf.floor((width - fallback_w) / 2),
                       fallback_h, fallback_w])
  windows = tf.concat([tf.stack([top, left, h, w], axis=1),
                       fallback[None]], axis=0)
  first = tf.reduce_min(tf.where(tf.concat([fits, [True]], axis=0))[:, 0])
  return tf.cast(windows[first], tf.int32)


def random_resized_crop(image: tf.Tensor, seed: tf.Tensor,
                        scale_min: float = 0.08) -> tf.Tensor:
  """Cuts `random_crop_window` out of a decoded or encoded image.

  Args:
    image: uint8 (H, W, C), or a scalar tf.string of encoded bytes (a JPEG
      is decoded only inside the window).
    seed: (2,) int stateless seed.
    scale_min: smallest area fraction.

  Returns:
    uint8 (h, w, C) (C = 3 for encoded input).
  """
  image = tf.convert_to_tensor(image)
  if image.dtype == tf.string:
    def fused():
      window = random_crop_window(tf.io.extract_jpeg_shape(image), seed,
                                  scale_min)
      return tf.io.decode_and_crop_jpeg(image, window, channels=3)
    return tf.cond(tf.io.is_jpeg(image), fused,
                   lambda: random_resized_crop(decode_image(image), seed,
                                               scale_min))
  top, left, h, w = tf.unstack(random_crop_window(tf.shape(image), seed,
                                                  scale_min))
  return image[top:top + h, left:left + w]


def resize_short_side(image: tf.Tensor, size: int) -> tf.Tensor:
  """torchvision `Resize(size)`: short side to `size`, aspect kept.

  The long side becomes floor(size * long / short); bilinear with
  antialiasing (as PIL, torchvision's default backend).

  Args:
    image: (H, W, C), any real dtype.
    size: the new short side.

  Returns:
    float32 (H', W', C), values in the input's range.
  """
  shape = tf.shape(image)
  h, w = shape[0], shape[1]
  long_side = size * tf.maximum(h, w) // tf.minimum(h, w)
  new_h = tf.where(h <= w, size, long_side)
  new_w = tf.where(h <= w, long_side, size)
  return tf.image.resize(image, tf.stack([new_h, new_w]), "bilinear",
                         antialias=True)


def centre_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """torchvision `CenterCrop(size)` of an image at least `size` a side.

  The offsets are round((H - size) / 2) and round((W - size) / 2), rounding
  half to even as Python's `round`.

  Args:
    image: (H, W, C) with H, W >= size.
    size: side of the square crop.

  Returns:
    (size, size, C), same dtype.
  """
  shape = tf.shape(image)
  offsets = tf.cast(tf.round(tf.cast(shape[:2] - size, tf.float32) / 2.0),
                    tf.int32)
  crop = image[offsets[0]:offsets[0] + size, offsets[1]:offsets[1] + size]
  crop.set_shape([size, size, image.shape[-1]])
  return crop


def normalize(image: tf.Tensor) -> tf.Tensor:
  """Pixels in [0, 255] to (x / 255 - MEAN_RGB) / STDDEV_RGB, float32."""
  image = tf.cast(image, tf.float32) / 255.0
  return (image - MEAN_RGB) / STDDEV_RGB


def resize_and_centre_crop(image: tf.Tensor, *, image_size: int,
                           resize_size: int) -> tf.Tensor:
  """`resize_short_side` to `resize_size`, then `centre_crop` to S.

  Args:
    image: uint8 (H, W, 3) or a scalar tf.string of encoded bytes.
    image_size: output side S.
    resize_size: short side before the crop, >= S.

  Returns:
    float32 (S, S, 3), pixels in [0, 255].
  """
  image = tf.convert_to_tensor(image)
  if image.dtype == tf.string:
    image = decode_image(image)
  return centre_crop(resize_short_side(image, resize_size), image_size)


def eval_image(image: tf.Tensor, *, image_size: int,
               resize_size: int) -> tf.Tensor:
  """The evaluation transform: `resize_and_centre_crop`, `normalize`.

  Returns:
    float32 (S, S, 3).
  """
  return normalize(resize_and_centre_crop(image, image_size=image_size,
                                          resize_size=resize_size))


def train_image(image: tf.Tensor, seed: tf.Tensor, *, augment: str,
                image_size: int, resize_size: int,
                scale_min: float = 0.08,
                rand_augment: RandAugmentSpec | None = None,
                erasing_probability: float = 0.0,
                color_jitter_strengths: tuple[float, float, float] | None = (
                    None)) -> tf.Tensor:
  """A training example, a deterministic function of (image, seed).

  The order is timm's (DeiT): crop and flip, RandAugment, normalisation,
  random erasing. With both extras off the result is the same as without
  them (they draw from seeds folded out of `seed`, which the crop and flip
  do not use).

  Args:
    image: uint8 (H, W, 3) or a scalar tf.string of encoded bytes.
    seed: (2,) int stateless seed.
    augment: "inception_crop": random-resized crop (area fraction in
      (scale_min, 1), aspect 3/4..4/3) resized to S, flip with probability
      1/2; "resize_crop_flip": resize short side to `resize_size`, centre
      crop S, flip; "none": `eval_image`.
    image_size: output side S.
    resize_size: short side of "resize_crop_flip" and "none", >= S.
    scale_min: smallest crop area fraction of "inception_crop".
    rand_augment: a RandAugment policy (`randaugment.rand_augment`) applied
      after the crop and flip, or None.
    erasing_probability: probability of `erasing.random_erasing` (timm's
      'pixel' mode, one box) after normalisation; 0 = off.
    color_jitter_strengths: (brightness, contrast, saturation) of
      `color_jitter.color_jitter` on the crop (before the flip, with which
      it commutes, as torchvision's ShuffleNetV2 recipe orders them), or
      None.

  Returns:
    float32 (S, S, 3).
  """
  if augment not in TRAIN_AUGMENTATIONS:
    raise ValueError(f"Unknown augment {augment!r}; valid: "
                     f"{TRAIN_AUGMENTATIONS}.")
  if augment == "none":
    image = resize_and_centre_crop(image, image_size=image_size,
                                   resize_size=resize_size)
  else:
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    if augment == "inception_crop":
      crop = random_resized_crop(image, crop_seed, scale_min)
      image = tf.image.resize(crop, [image_size, image_size], "bilinear",
                              antialias=True)
    else:
      image = resize_and_centre_crop(image, image_size=image_size,
                                     resize_size=resize_size)
    if color_jitter_strengths is not None:
      image = color_jitter.color_jitter(
          image, tf.random.experimental.stateless_fold_in(seed, 3),
          color_jitter_strengths)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  if rand_augment is not None:
    image = randaugment.rand_augment(
        image, tf.random.experimental.stateless_fold_in(seed, 1),
        rand_augment)
  image = normalize(image)
  if erasing_probability > 0:
    image = erasing.random_erasing(
        image, tf.random.experimental.stateless_fold_in(seed, 2),
        probability=erasing_probability)
  return image
