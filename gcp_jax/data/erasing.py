"""Random erasing in TensorFlow, following timm 0.4.12's `RandomErasing`.

Applied to one normalised training image (after `preprocess.normalize`), as DeiT
does (docs/method.md §8.1: probability 0.25, 'pixel' mode, one box). With the
given probability the image gets `count` boxes (timm draws the number of boxes
uniformly in 1..count when count > 1); each box is found in up to 10
attempts: an area fraction U(0.02, 1/3) of the image divided by the number
of boxes, a log-uniform aspect ratio h / w in (0.3, 1 / 0.3), sides
h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect)); the first
attempt with h < H and w < W is placed uniformly (top in 0..H-h, left in
0..W-w), and if none fits the box is skipped. The box is filled with
standard normal noise per pixel and channel ('pixel'), one normal colour
('rand') or zeros ('const'), in normalised units. Pixels outside the boxes
are returned untouched.

Synopsis:
  x = preprocess.normalize(image)
  x = random_erasing(x, seed, probability=0.25)
"""

import math

from gcp_jax.data.tensorflow_cpu import tf

__all__ = ["ERASING_MODES", "random_erasing", "erasing_box"]

ERASING_MODES = ("pixel", "rand", "const")
ATTEMPTS = 10


def erasing_box(image_shape: tf.Tensor, seed: tf.Tensor, *,
                area_range: tuple[float, float] = (0.02, 1.0 / 3.0),
                aspect_range: tuple[float, float] = (0.3, 1.0 / 0.3),
                num_boxes: tf.Tensor | int = 1) -> tf.Tensor:
  """One erasing box, drawn as timm does (module docstring).

  Args:
    image_shape: int (2,) or longer, (H, W, ...).
    seed: (2,) int stateless seed.
    area_range: area fraction range of the box, before dividing by
      `num_boxes`.
    aspect_range: range of h / w, sampled log-uniformly.
    num_boxes: the number of boxes sharing the area budget.

  Returns:
    int32 (5,): [top, left, height, width, found]; found = 0 when no attempt
    fitted (then the box is not to be erased).
  """
  height = tf.cast(image_shape[0], tf.float32)
  width = tf.cast(image_shape[1], tf.float32)
  area_seed, aspect_seed, top_seed, left_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 4))
  area = (tf.random.stateless_uniform([ATTEMPTS], area_seed, *area_range)
          * height * width / tf.cast(num_boxes, tf.float32))
  aspect = tf.exp(tf.random.stateless_uniform(
      [ATTEMPTS], aspect_seed, math.log(aspect_range[0]),
      math.log(aspect_range[1])))
  h = tf.round(tf.sqrt(area * aspect))
  w = tf.round(tf.sqrt(area / aspect))
  fits = (h < height) & (w < width)
  first = tf.argmax(tf.cast(fits, tf.int32))  # 0 when none fits
  h, w = h[first], w[first]
  top = tf.floor(tf.random.stateless_uniform([], top_seed)
                 * (height - h + 1))
  left = tf.floor(tf.random.stateless_uniform([], left_seed)
                  * (width - w + 1))
  found = tf.cast(tf.reduce_any(fits), tf.float32)
  return tf.cast(tf.stack([top, left, h, w, found]), tf.int32)


def random_erasing(image: tf.Tensor, seed: tf.Tensor, *, probability: float,
                   mode: str = "pixel", count: int = 1,
                   area_range: tuple[float, float] = (0.02, 1.0 / 3.0),
                   aspect_range: tuple[float, float] = (0.3, 1.0 / 0.3)
                   ) -> tf.Tensor:
  """timm `RandomErasing` of one normalised image; a function of `seed`.

  Args:
    image: float32 (H, W, C), normalised.
    seed: (2,) int stateless seed.
    probability: chance that the image is erased at all.
    mode: "pixel" (N(0, 1) per pixel and channel), "rand" (one N(0, 1)
      value per channel for the box) or "const" (zeros).
    count: the most boxes per image; the number is drawn uniformly in
      1..count.
    area_range: box area fraction range (before dividing by the number of
      boxes).
    aspect_range: box h / w range, sampled log-uniformly.

  Returns:
    float32 (H, W, C): the image with its boxes replaced, other pixels
    unchanged.
  """
  if mode not in ERASING_MODES:
    raise ValueError(f"Unknown erasing mode {mode!r}; valid: "
                     f"{ERASING_MODES}.")
  if count < 1:
    raise ValueError(f"Erasing needs count >= 1, got {count}.")
  if probability <= 0:
    return image
  seeds = tf.random.experimental.stateless_split(seed, count + 3)
  erase = tf.random.stateless_uniform([], seeds[0]) < probability
  return tf.cond(erase,
                 lambda: _erase_boxes(image, seeds, mode, count, area_range,
                                      aspect_range),
                 lambda: image)


def _erase_boxes(image: tf.Tensor, seeds: tf.Tensor, mode: str, count: int,
                 area_range: tuple[float, float],
                 aspect_range: tuple[float, float]) -> tf.Tensor:
  """`random_erasing` once it has decided to erase (seeds[1:] unused)."""
  shape = tf.shape(image)
  num_boxes = (tf.random.stateless_uniform([], seeds[1], 1, count + 1,
                                           tf.int32) if count > 1 else 1)
  if mode == "pixel":
    noise = tf.random.stateless_normal(shape, seeds[2], dtype=image.dtype)
  elif mode == "rand":
    noise = tf.random.stateless_normal(shape[-1:], seeds[2],
                                       dtype=image.dtype)
  else:
    noise = tf.zeros([], image.dtype)
  rows = tf.range(shape[0])[:, None]
  columns = tf.range(shape[1])[None, :]
  erased = tf.zeros(shape[:2], tf.bool)
  for box_index in range(count):
    top, left, h, w, found = tf.unstack(erasing_box(
        shape, seeds[3 + box_index], area_range=area_range,
        aspect_range=aspect_range, num_boxes=num_boxes))
    inside = ((rows >= top) & (rows < top + h) & (columns >= left)
              & (columns < left + w))
    erased |= inside & (found > 0) & (box_index < num_boxes)
  return tf.where(erased[..., None], noise, image)
