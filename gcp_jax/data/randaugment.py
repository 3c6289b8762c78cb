"""RandAugment in TensorFlow, following timm 0.4.12 (the DeiT recipe).

timm's `rand-m9-mstd0.5-inc1` (docs/method.md §8.1): for every training image,
after the random-resized crop and the flip and before normalisation,
`num_layers` (2) operations are drawn uniformly, with replacement, from 15 PIL
operations.
Each drawn operation is applied with probability 1/2, at a magnitude drawn
from N(9, 0.5) and clipped to [0, 10]; signed operations (rotate, shear,
translate, the 'increasing' enhancements) get a random sign. The 'inc1'
variants make Posterize, Solarize and the four enhancements stronger as the
magnitude grows (`magnitude_arguments` has the mapping).

The operations reproduce PIL's arithmetic on uint8 images (`ImageOps`,
`ImageEnhance`, `Image.transform`), and the tests check them bit for bit
against PIL: every op returns integer values in [0, 255] (stored as
float32), blends truncate as PIL's `Image.blend`, the geometric ops sample
at PIL's pixel centres in float64 and fill what comes from outside the
image with the ImageNet mean colour (124, 116, 104), as timm does.
Differences from timm: geometric ops always resample bilinearly (timm's
default train interpolation "random" picks bilinear or bicubic per call;
bicubic is not implemented); Posterize to 0 bits gives black as the PIL of
timm 0.4.12's time did (PIL >= 10 raises instead); and the randomness comes
from stateless TF ops, so it is a function of the seed.

Synopsis:
  spec = parse_randaugment("rand-m9-mstd0.5-inc1")   # config.py, no TF
  image = rand_augment(image, seed, spec)   # (H, W, 3) in [0, 255] -> same
  x = preprocess.normalize(image)
"""

import functools
import math
from collections.abc import Callable

from gcp_jax.data.tensorflow_cpu import tf
from gcp_jax.data.config import RandAugmentSpec, parse_randaugment

__all__ = ["MAX_LEVEL", "OP_PROBABILITY", "FILL_RGB", "OPS",
           "INCREASING_OPS", "RandAugmentSpec", "parse_randaugment",
           "rand_augment", "apply_op", "magnitude_arguments", "affine",
           "quantize",
           "auto_contrast", "equalize", "invert", "posterize", "solarize",
           "solarize_add", "color", "contrast", "brightness", "sharpness",
           "rotate", "shear_x", "shear_y", "translate_x_rel",
           "translate_y_rel"]

MAX_LEVEL = 10.0      # magnitudes are clipped to [0, MAX_LEVEL]
OP_PROBABILITY = 0.5  # timm applies each drawn op with this probability
# timm's fill colour: round(255 * ImageNet mean) per channel.
FILL_RGB = (124.0, 116.0, 104.0)
TRANSLATE_FRACTION = 0.45  # TranslateXRel/YRel at magnitude 10
SOLARIZE_ADD_THRESHOLD = 128

# timm's `_RAND_TRANSFORMS` and `_RAND_INCREASING_TRANSFORMS`, in its order
# (the order fixes which op an index draws).
OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize",
       "Solarize", "SolarizeAdd", "Color", "Contrast", "Brightness",
       "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate",
                  "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
                  "ColorIncreasing", "ContrastIncreasing",
                  "BrightnessIncreasing", "SharpnessIncreasing", "ShearX",
                  "ShearY", "TranslateXRel", "TranslateYRel")


def _float64(value) -> tf.Tensor:
  """A float64 tensor of a Python number (without a float32 detour, which
  tf.cast of a Python float takes) or of a tensor."""
  if isinstance(value, (int, float)):
    return tf.constant(value, tf.float64)
  return tf.cast(value, tf.float64)


def quantize(image: tf.Tensor) -> tf.Tensor:
  """Rounds and clips to the uint8 values a PIL image holds (as float32)."""
  return tf.clip_by_value(tf.round(tf.cast(image, tf.float32)), 0.0, 255.0)


def _blend(degenerate: tf.Tensor, image: tf.Tensor,
           factor: tf.Tensor) -> tf.Tensor:
  """PIL `Image.blend(degenerate, image, factor)` of uint8 images.

  degenerate + factor * (image - degenerate) in float32 (factor may exceed
  1: extrapolation), clipped to [0, 255] and truncated, as PIL does.
  """
  factor = tf.cast(factor, tf.float32)
  mixed = degenerate + factor * (image - degenerate)
  return tf.floor(tf.clip_by_value(mixed, 0.0, 255.0))


def _apply_lut(image: tf.Tensor, luts: tf.Tensor) -> tf.Tensor:
  """Maps each channel c of an integer-valued image through luts[c]."""
  indices = tf.cast(image, tf.int32) + tf.range(0, 3 * 256, 256)
  return tf.cast(tf.gather(tf.reshape(luts, [-1]), indices), tf.float32)


def _luma(image: tf.Tensor) -> tf.Tensor:
  """PIL's RGB -> "L" conversion (ITU-R 601-2 in 16-bit fixed point).

  Returns:
    int32 (H, W): (19595 R + 38470 G + 7471 B + 2^15) >> 16.
  """
  rgb = tf.cast(image, tf.int32)
  weighted = (19595 * rgb[..., 0] + 38470 * rgb[..., 1] + 7471 * rgb[..., 2]
              + 32768)
  return tf.bitwise.right_shift(weighted, 16)


# ----------------------------------------------------------------------------
# The operations. `image`: float32 (H, W, 3), integer values in [0, 255];
# each returns the same.


def auto_contrast(image: tf.Tensor) -> tf.Tensor:
  """PIL `ImageOps.autocontrast`: per channel, maps [lo, hi] onto [0, 255].

  lo and hi are the channel's darkest and lightest values; a pixel x becomes
  int(x * s - lo * s) with s = 255 / (hi - lo), computed in float64 as PIL.
  A constant channel is left alone.
  """
  lo = tf.cast(tf.reduce_min(image, axis=[0, 1]), tf.float64)[:, None]
  hi = tf.cast(tf.reduce_max(image, axis=[0, 1]), tf.float64)[:, None]
  scale = 255.0 / tf.where(hi > lo, hi - lo, 1.0)
  values = tf.range(256, dtype=tf.float64)[None, :]
  luts = tf.clip_by_value(tf.floor(values * scale - lo * scale), 0.0, 255.0)
  luts = tf.where(hi > lo, luts, values)  # (3, 256)
  return _apply_lut(image, tf.cast(luts, tf.int32))


def equalize(image: tf.Tensor) -> tf.Tensor:
  """PIL `ImageOps.equalize`: per-channel histogram equalisation.

  With h the channel's 256-bin histogram, N its pixel count and h_max the
  count of its lightest value, step = (N - h_max) // 255 and value i maps to
  (step // 2 + sum_{j<i} h_j) // step, clipped to 255. step = 0 (e.g. fewer
  than two distinct values) leaves the channel alone.
  """
  luts = []
  for c in range(3):
    values = tf.reshape(tf.cast(image[..., c], tf.int32), [-1])
    histogram = tf.math.bincount(values, minlength=256, maxlength=256)
    lightest = tf.reduce_max(values)
    step = (tf.size(values) - histogram[lightest]) // 255
    below = tf.cumsum(histogram, exclusive=True)
    lut = tf.minimum((step // 2 + below) // tf.maximum(step, 1), 255)
    luts.append(tf.where(step > 0, lut, tf.range(256)))
  return _apply_lut(image, tf.stack(luts))


def invert(image: tf.Tensor) -> tf.Tensor:
  """PIL `ImageOps.invert`: 255 - x."""
  return 255.0 - image


def posterize(image: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
  """PIL `ImageOps.posterize`: keeps the `bits` (0..8) high bits of x.

  bits = 0 gives a black image (timm's PosterizeIncreasing reaches it at
  magnitude 10).
  """
  shift = 8 - tf.cast(bits, tf.int32)
  values = tf.cast(image, tf.int32)
  kept = tf.bitwise.left_shift(tf.bitwise.right_shift(values, shift), shift)
  return tf.cast(kept, tf.float32)


def solarize(image: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
  """PIL `ImageOps.solarize`: x < threshold stays, else 255 - x.

  threshold = 256 leaves the image alone.
  """
  threshold = tf.cast(threshold, tf.float32)
  return tf.where(image < threshold, image, 255.0 - image)


def solarize_add(image: tf.Tensor, addition: tf.Tensor,
                 threshold: int = SOLARIZE_ADD_THRESHOLD) -> tf.Tensor:
  """timm `solarize_add`: x < threshold becomes min(255, x + addition)."""
  addition = tf.cast(addition, tf.float32)
  return tf.where(image < threshold, tf.minimum(image + addition, 255.0),
                  image)


def color(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL `ImageEnhance.Color`: blend from the grey (luma) image; factor 1 =
  identity, 0 = grey, > 1 more saturated."""
  grey = tf.cast(_luma(image), tf.float32)[..., None]
  return _blend(tf.broadcast_to(grey, tf.shape(image)), image, factor)


def contrast(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL `ImageEnhance.Contrast`: blend from a flat image at the mean luma
  (rounded half up); factor 1 = identity, 0 = flat grey."""
  mean = tf.reduce_mean(tf.cast(_luma(image), tf.float64))
  degenerate = tf.cast(tf.floor(mean + 0.5), tf.float32)
  return _blend(tf.fill(tf.shape(image), degenerate), image, factor)


def brightness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL `ImageEnhance.Brightness`: blend from black, i.e. x * factor
  truncated; factor 1 = identity."""
  return _blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL `ImageEnhance.Sharpness`: blend from the image smoothed by PIL's
  SMOOTH filter ([[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, rounded; the
  one-pixel border is not filtered); factor 1 = identity, > 1 sharper."""
  kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]])
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1],
                                  "VALID")[0]
  smooth = tf.clip_by_value(tf.round(smooth / 13.0), 0.0, 255.0)
  shape = tf.shape(image)
  interior = tf.pad(tf.ones(shape[:2] - 2, tf.bool), [[1, 1], [1, 1]])
  degenerate = tf.where(interior[..., None],
                        tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
  return _blend(degenerate, image, factor)


def affine(image: tf.Tensor, matrix: tf.Tensor,
           fill: tuple[float, float, float] = FILL_RGB,
           interpolation: str = "bilinear") -> tf.Tensor:
  """PIL `Image.transform(size, AFFINE, matrix, resample, fillcolor)`.

  Output pixel (i, j) (row, column) takes the input at the continuous point
  (x, y) = (a u + b v + c, d u + e v + f), (u, v) = (j + 1/2, i + 1/2), in
  PIL's convention of pixel centres at half-integers. A point outside
  [0, W) x [0, H) gives `fill`. Inside, "nearest" takes pixel
  (floor(y), floor(x)); "bilinear" interpolates between the pixel centres
  around (x - 1/2, y - 1/2), repeating the edge pixels, first along x then
  along y, in float64, and truncates, all as PIL's Geometry.c, so the
  result matches PIL bit for bit.

  Args:
    image: float32 (H, W, 3), values in [0, 255].
    matrix: (6,) (a, b, c, d, e, f), any float dtype.
    fill: RGB of the outside.
    interpolation: "bilinear" or "nearest".

  Returns:
    float32 (H, W, 3), integer values.
  """
  if interpolation not in ("bilinear", "nearest"):
    raise ValueError(f"Unknown interpolation {interpolation!r}.")
  a, b, c, d, e, f = tf.unstack(_float64(matrix))
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  v = tf.range(tf.cast(height, tf.float64))[:, None] + 0.5
  u = tf.range(tf.cast(width, tf.float64))[None, :] + 0.5
  x = a * u + b * v + c
  y = d * u + e * v + f
  inside = ((x >= 0) & (x < tf.cast(width, tf.float64)) & (y >= 0)
            & (y < tf.cast(height, tf.float64)))
  pixels = tf.reshape(tf.cast(image, tf.float64), [-1, 3])

  def gather(rows, columns):
    rows = tf.clip_by_value(tf.cast(rows, tf.int32), 0, height - 1)
    columns = tf.clip_by_value(tf.cast(columns, tf.int32), 0, width - 1)
    return tf.gather(pixels, rows * width + columns)

  if interpolation == "nearest":
    sampled = gather(tf.floor(y), tf.floor(x))
  else:
    x, y = x - 0.5, y - 0.5
    left, top = tf.floor(x), tf.floor(y)
    dx, dy = (x - left)[..., None], (y - top)[..., None]
    upper_left, upper_right = gather(top, left), gather(top, left + 1)
    lower_left = gather(top + 1, left)
    lower_right = gather(top + 1, left + 1)
    upper = upper_left + (upper_right - upper_left) * dx
    lower = lower_left + (lower_right - lower_left) * dx
    sampled = tf.floor(upper + (lower - upper) * dy)
  return tf.where(inside[..., None], tf.cast(sampled, tf.float32),
                  tf.constant(fill, tf.float32))


def rotate(image: tf.Tensor, degrees: tf.Tensor, **kwargs) -> tf.Tensor:
  """PIL `Image.rotate(degrees)`: counter-clockwise about the image centre
  (W / 2, H / 2), same size; `kwargs` as in `affine`."""
  shape = tf.cast(tf.shape(image), tf.float64)
  cx, cy = shape[1] / 2.0, shape[0] / 2.0
  angle = -_float64(degrees) * (math.pi / 180.0)
  # PIL rounds the matrix to 15 decimals (so that cos 90 deg is 0).
  cos = tf.round(tf.cos(angle) * 1e15) / 1e15
  sin = tf.round(tf.sin(angle) * 1e15) / 1e15
  # Output point p maps to R (p - centre) + centre, R = [[cos, sin],
  # [-sin, cos]].
  matrix = tf.stack([cos, sin, cx - cos * cx - sin * cy,
                     -sin, cos, cy + sin * cx - cos * cy])
  return affine(image, matrix, **kwargs)


def shear_x(image: tf.Tensor, factor: tf.Tensor, **kwargs) -> tf.Tensor:
  """timm `shear_x`: source x = u + factor * v (about the top-left
  corner)."""
  factor = _float64(factor)
  return affine(image, tf.stack([1.0, factor, 0.0, 0.0, 1.0, 0.0]),
                **kwargs)


def shear_y(image: tf.Tensor, factor: tf.Tensor, **kwargs) -> tf.Tensor:
  """timm `shear_y`: source y = factor * u + v."""
  factor = _float64(factor)
  return affine(image, tf.stack([1.0, 0.0, 0.0, factor, 1.0, 0.0]),
                **kwargs)


def translate_x_rel(image: tf.Tensor, fraction: tf.Tensor,
                    **kwargs) -> tf.Tensor:
  """timm `translate_x_rel`: source x = u + fraction * W, i.e. the content
  moves left by fraction * W pixels (right for a negative fraction)."""
  pixels = _float64(fraction) * tf.cast(tf.shape(image)[1],
                                                   tf.float64)
  return affine(image, tf.stack([1.0, 0.0, pixels, 0.0, 1.0, 0.0]),
                **kwargs)


def translate_y_rel(image: tf.Tensor, fraction: tf.Tensor,
                    **kwargs) -> tf.Tensor:
  """timm `translate_y_rel`: the content moves up by fraction * H."""
  pixels = _float64(fraction) * tf.cast(tf.shape(image)[0],
                                                   tf.float64)
  return affine(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, pixels]),
                **kwargs)


# ----------------------------------------------------------------------------
# Magnitude -> operation argument (timm's `LEVEL_TO_ARG`), in float64 with
# timm's order of operations so that int() truncations agree with Python.


def magnitude_arguments(name: str, level: tf.Tensor,
                        sign: tf.Tensor) -> tf.Tensor | None:
  """The argument of op `name` at magnitude `level` in [0, MAX_LEVEL].

  With r = level / 10 and s = sign (+1 or -1, timm's random negation):
    Rotate: 30 r s degrees; ShearX/Y: 0.3 r s; TranslateX/YRel: 0.45 r s;
    Posterize: int(4 r) bits; PosterizeIncreasing: 4 - int(4 r);
    Solarize: int(256 r); SolarizeIncreasing: 256 - int(256 r);
    SolarizeAdd: int(110 r);
    Color/Contrast/Brightness/Sharpness: 1.8 r + 0.1;
    their Increasing variants: max(0.1, 1 + 0.9 r s);
    AutoContrast, Equalize, Invert: None (no argument).
  At m9 (r = 0.9): 27 deg, 0.27, 0.405, 3 / 1 bits, 230 / 26, 99, 1.72,
  1.81 or 0.19.

  Args:
    name: one of OPS or INCREASING_OPS.
    level: float64 scalar.
    sign: float64 scalar, +1 or -1.

  Returns:
    float64 scalar (integral for Posterize/Solarize/SolarizeAdd), or None.
  """
  r = _float64(level) / MAX_LEVEL
  sign = _float64(sign)
  if name in ("AutoContrast", "Equalize", "Invert"):
    return None
  if name == "Rotate":
    return r * 30.0 * sign
  if name in ("ShearX", "ShearY"):
    return r * 0.3 * sign
  if name in ("TranslateXRel", "TranslateYRel"):
    return r * TRANSLATE_FRACTION * sign
  if name == "Posterize":
    return tf.floor(r * 4.0)
  if name == "PosterizeIncreasing":
    return 4.0 - tf.floor(r * 4.0)
  if name == "Solarize":
    return tf.floor(r * 256.0)
  if name == "SolarizeIncreasing":
    return 256.0 - tf.floor(r * 256.0)
  if name == "SolarizeAdd":
    return tf.floor(r * 110.0)
  if name in ("Color", "Contrast", "Brightness", "Sharpness"):
    return r * 1.8 + 0.1
  if name.endswith("Increasing"):
    return tf.maximum(1.0 + r * 0.9 * sign, 0.1)
  raise ValueError(f"Unknown RandAugment op {name!r}.")


def _op_function(name: str) -> Callable[..., tf.Tensor]:
  """The image function of an op name (Increasing variants share it)."""
  return {
      "AutoContrast": auto_contrast, "Equalize": equalize, "Invert": invert,
      "Rotate": rotate, "Posterize": posterize, "Solarize": solarize,
      "SolarizeAdd": solarize_add, "Color": color, "Contrast": contrast,
      "Brightness": brightness, "Sharpness": sharpness, "ShearX": shear_x,
      "ShearY": shear_y, "TranslateXRel": translate_x_rel,
      "TranslateYRel": translate_y_rel,
  }[name.removesuffix("Increasing")]


def apply_op(image: tf.Tensor, name: str, level: tf.Tensor,
             sign: tf.Tensor = 1.0,
             fill: tuple[float, float, float] = FILL_RGB) -> tf.Tensor:
  """Op `name` at magnitude `level` (clipped to [0, 10]) with `sign`.

  Args:
    image: float32 (H, W, 3), integer values in [0, 255].
    name: one of OPS or INCREASING_OPS.
    level: magnitude, scalar.
    sign: +1 or -1 for the signed ops (ignored by the others).
    fill: outside colour of the geometric ops.

  Returns:
    float32 (H, W, 3), integer values in [0, 255].
  """
  level = tf.clip_by_value(_float64(level), 0.0, MAX_LEVEL)
  argument = magnitude_arguments(name, level, sign)
  function = _op_function(name)
  if argument is None:
    return function(image)
  if name.removesuffix("Increasing") in ("Rotate", "ShearX", "ShearY",
                                         "TranslateXRel", "TranslateYRel"):
    return function(image, argument, fill=fill)
  return function(image, argument)


def _switch_op(image: tf.Tensor, names: tuple[str, ...], index: tf.Tensor,
               level: tf.Tensor, sign: tf.Tensor,
               fill: tuple[float, float, float]) -> tf.Tensor:
  """Applies op names[index] (a traced index) at `level` with `sign`."""
  branches = [lambda name=name: apply_op(image, name, level, sign, fill)
              for name in names]
  out = tf.switch_case(index, branches)
  out.set_shape(image.shape)
  return out


def rand_augment(image: tf.Tensor, seed: tf.Tensor, spec: RandAugmentSpec,
                 fill: tuple[float, float, float] = FILL_RGB) -> tf.Tensor:
  """timm's RandAugment of one image, a deterministic function of `seed`.

  The image is first rounded and clipped to uint8 values (timm works on PIL
  uint8 images). Then `spec.num_layers` times: an op drawn uniformly from
  `OPS` (or `INCREASING_OPS` with `spec.increasing`), applied with
  probability OP_PROBABILITY at magnitude N(spec.magnitude,
  spec.magnitude_std) clipped to [0, 10], with a sign of +-1 drawn with
  probability 1/2 each.

  Args:
    image: (H, W, 3) pixels in [0, 255], any real dtype.
    seed: (2,) int stateless seed.
    spec: the parsed policy (`parse_randaugment`).
    fill: outside colour of the geometric ops.

  Returns:
    float32 (H, W, 3), integer values in [0, 255] (not normalised).
  """
  names = INCREASING_OPS if spec.increasing else OPS
  image = quantize(image)
  layer_seeds = tf.random.experimental.stateless_split(
      seed, max(spec.num_layers, 1))
  for layer in range(spec.num_layers):
    op_seed, apply_seed, level_seed, sign_seed = tf.unstack(
        tf.random.experimental.stateless_split(layer_seeds[layer], 4))
    index = tf.random.stateless_uniform([], op_seed, 0, len(names),
                                        tf.int32)
    apply = tf.random.stateless_uniform([], apply_seed) < OP_PROBABILITY
    level = tf.constant(float(spec.magnitude), tf.float64)
    if spec.magnitude_std > 0:
      level += spec.magnitude_std * tf.random.stateless_normal(
          [], level_seed, dtype=tf.float64)
    sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5,
                    tf.constant(1.0, tf.float64),
                    tf.constant(-1.0, tf.float64))
    image = tf.cond(apply,
                    functools.partial(_switch_op, image, names, index, level,
                                      sign, fill),
                    functools.partial(tf.identity, image))
  return image
