"""Image preprocessing: torchvision geometry, seeds, eager == tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from gcp_jax.data import preprocess

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (30, 22, 3), dtype=np.uint8)


def _seed(i: int) -> tf.Tensor:
  return tf.constant([7, i], tf.int64)


def _train(image, seed, augment="inception_crop"):
  return preprocess.train_image(image, seed, augment=augment, image_size=16,
                                resize_size=18)


def _eval(image):
  return preprocess.eval_image(image, image_size=16, resize_size=18)


@pytest.mark.parametrize("encoding", ["raw", "png", "jpeg"])
def test_eager_equals_dataset_map(encoding):
  """Every transform gives the same pixels eagerly and in tf.data."""
  if encoding == "raw":
    image = tf.constant(IMAGE)
  else:
    encode = tf.io.encode_png if encoding == "png" else tf.io.encode_jpeg
    image = encode(IMAGE)
  transforms = [lambda x, i: _eval(x)] + [
      lambda x, i, a=a: _train(x, _seed(i), a)
      for a in ("inception_crop", "resize_crop_flip", "none")]
  for transform in transforms:
    for i in range(3):
      eager = transform(image, i).numpy()
      mapped = tf.data.Dataset.from_tensors(image).map(
          lambda x: transform(x, i))
      assert eager.shape == (16, 16, 3) and eager.dtype == np.float32
      np.testing.assert_array_equal(eager, next(iter(mapped)).numpy())


def test_decode_makes_grey_images_rgb():
  grey = RNG.integers(0, 256, (5, 7, 1), dtype=np.uint8)
  decoded = preprocess.decode_image(tf.io.encode_png(grey)).numpy()
  assert decoded.shape == (5, 7, 3)
  for c in range(3):
    np.testing.assert_array_equal(decoded[..., c], grey[..., 0])


@pytest.mark.parametrize("shape,size,expected", [
    ((40, 20), 10, (20, 10)), ((20, 40), 10, (10, 20)),
    ((30, 47), 10, (10, 15)), ((9, 9), 4, (4, 4))])
def test_resize_short_side_shapes(shape, size, expected):
  """torchvision Resize(int): long side = int(size * long / short)."""
  out = preprocess.resize_short_side(tf.zeros((*shape, 3), tf.uint8), size)
  assert tuple(out.shape[:2]) == expected


def test_eval_crop_by_hand():
  """40 x 20 image, resize 10, crop 8: resized to 20 x 10, crop offsets
  round(12 / 2) = 6 and round(2 / 2) = 1. 45 x 20 with resize 20 is not
  resized, crop 20 at round(12.5) = 12 (half to even, as torchvision)."""
  x = RNG.integers(0, 256, (40, 20, 3), dtype=np.uint8)
  resized = tf.image.resize(x, (20, 10), "bilinear", antialias=True)
  out = preprocess.resize_and_centre_crop(x, image_size=8, resize_size=10)
  np.testing.assert_array_equal(out.numpy(), resized.numpy()[6:14, 1:9])
  y = RNG.integers(0, 256, (45, 20, 3), dtype=np.uint8)
  out = preprocess.resize_and_centre_crop(y, image_size=20, resize_size=20)
  np.testing.assert_array_equal(out.numpy(), y[12:32].astype(np.float32))
  normalised = preprocess.eval_image(y, image_size=20, resize_size=20)
  np.testing.assert_allclose(
      normalised.numpy(),
      (y[12:32] / 255.0 - preprocess.MEAN_RGB) / preprocess.STDDEV_RGB,
      atol=1e-5)


def test_crop_window_bounds_over_seeds():
  """Area fraction in [scale_min, 1] and aspect in [3/4, 4/3] (up to the
  rounding of w and h), window inside the image; both ends are reached."""
  height, width, scale_min = 300, 400, 0.08
  windows = tf.data.Dataset.range(400).map(
      lambda i: preprocess.random_crop_window(
          tf.constant([height, width]), tf.stack([tf.constant(3, tf.int64),
                                                  i]), scale_min))
  top, left, h, w = np.array(list(windows.as_numpy_iterator())).T
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + h <= height).all() and (left + w <= width).all()
  area = h * w / (height * width)
  assert area.min() >= scale_min * 0.97 and area.max() <= 1.0
  assert area.min() < 0.15 and area.max() > 0.9
  aspect = w / h
  assert aspect.min() >= 0.75 * 0.97 and aspect.max() <= 4 / 3 * 1.03
  assert len({(a, b) for a, b in zip(top, left)}) > 300


def test_crop_falls_back_to_centre():
  """100 x 4: no window of area >= 8% fits with aspect >= 3/4, so every
  seed gives torchvision's fallback: full width, h = round(4 / 0.75) = 5,
  top = (100 - 5) // 2."""
  for i in range(5):
    window = preprocess.random_crop_window(tf.constant([100, 4]), _seed(i))
    np.testing.assert_array_equal(window.numpy(), [47, 0, 5, 4])


def test_flip_about_half_the_time():
  """resize_crop_flip of an image already at size only flips: left half
  dark, right half bright, so the first column says whether it flipped."""
  image = np.zeros((16, 16, 3), np.uint8)
  image[:, 8:] = 255
  outputs = tf.data.Dataset.range(400).map(
      lambda i: preprocess.train_image(
          image, tf.stack([tf.constant(5, tf.int64), i]),
          augment="resize_crop_flip", image_size=16, resize_size=16))
  flipped = [out[0, 0, 0] > 0 for out in outputs.as_numpy_iterator()]
  assert 160 <= sum(flipped) <= 240


def test_same_seed_same_output_other_seed_differs():
  image = tf.io.encode_jpeg(IMAGE)
  first = _train(image, _seed(1)).numpy()
  np.testing.assert_array_equal(first, _train(image, _seed(1)).numpy())
  assert not np.array_equal(first, _train(image, _seed(2)).numpy())
