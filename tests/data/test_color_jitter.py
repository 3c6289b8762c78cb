"""ColorJitter (torchvision on PIL images, GCP_Optimization's ShuffleNetV2
recipe): every order of the three adjustments bit for bit against PIL's
ImageEnhance chain; the draw (a permutation, factors in their ranges,
determinism in the seed); its place in `create_datasets`; bad configs."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance

from gcp_jax.data import color_jitter as cj
from gcp_jax.data import pipeline
from gcp_jax.data.config import DataError, DataSettings
from tests.data.folders import folder_config, write_image

IMAGE = np.random.default_rng(0).integers(0, 256, (19, 23, 3),
                                          dtype=np.uint8)
PIL_ENHANCE = (ImageEnhance.Brightness, ImageEnhance.Contrast,
               ImageEnhance.Color)       # torchvision's adjust_* on PIL


def _pil_jitter(image, order, factors):
  """torchvision's ColorJitter on a PIL image for a drawn order and
  factors: each ImageEnhance in turn."""
  pil = Image.fromarray(image)
  for i in order:
    pil = PIL_ENHANCE[i](pil).enhance(float(factors[i]))
  return np.asarray(pil)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_every_order_equals_pil(order):
  factors = np.float32([0.63, 1.37, 0.81])
  ours = cj.apply_in_order(tf.constant(IMAGE, tf.float32),
                           tf.constant(order, tf.int32),
                           tf.constant(factors)).numpy()
  np.testing.assert_array_equal(ours, _pil_jitter(IMAGE, order, factors))


def test_the_draw():
  """Deterministic in the seed; every permutation occurs; factors
  uniform in [0.6, 1.4]; a strength of 0 leaves its factor at 1."""
  orders, factors = set(), []
  for k in range(120):
    seed = tf.constant([7, k], tf.int64)
    order, f = cj.sample(seed, (0.4, 0.4, 0.4))
    again = cj.sample(seed, (0.4, 0.4, 0.4))
    np.testing.assert_array_equal(order, again[0])
    np.testing.assert_array_equal(f, again[1])
    orders.add(tuple(order.numpy()))
    factors.append(f.numpy())
  assert orders == set(itertools.permutations(range(3)))
  factors = np.array(factors)
  assert factors.min() >= 0.6 and factors.max() <= 1.4
  assert abs(factors.mean() - 1.0) < 0.05
  _, f = cj.sample(tf.constant([1, 2], tf.int64), (0.0, 0.5, 0.0))
  assert f.numpy()[0] == 1.0 and f.numpy()[2] == 1.0 and f.numpy()[1] != 1
  _, f = cj.sample(tf.constant([1, 2], tf.int64), (1.5, 0.0, 0.0))
  assert 0.0 <= f.numpy()[0] <= 2.5


def test_color_jitter_is_the_drawn_chain_on_the_rounded_image():
  seed = tf.constant([3, 4], tf.int64)
  image = IMAGE.astype(np.float32) + 0.3       # a resized crop: not uint8
  order, factors = cj.sample(seed, (0.4, 0.4, 0.4))
  ours = cj.color_jitter(tf.constant(image), seed, (0.4, 0.4, 0.4)).numpy()
  np.testing.assert_array_equal(
      ours, _pil_jitter(IMAGE, order.numpy(), factors.numpy()))


def test_pipeline_applies_it_only_when_set(tmp_path):
  rng = np.random.default_rng(1)
  for i in range(8):
    write_image(str(tmp_path / "train" / f"c{i % 2}" / f"{i}.png"),
                rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    write_image(str(tmp_path / "val" / f"c{i % 2}" / f"{i}.png"),
                rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
  plain = next(pipeline.create_datasets(folder_config(
      tmp_path)).train_batches(0))["image"]
  off = next(pipeline.create_datasets(folder_config(
      tmp_path, color_jitter=(0, 0, 0))).train_batches(0))["image"]
  jittered = next(pipeline.create_datasets(folder_config(
      tmp_path, color_jitter=(0.4, 0.4, 0.4))).train_batches(0))["image"]
  np.testing.assert_array_equal(plain, off)
  assert not np.allclose(plain, jittered)


@pytest.mark.parametrize("value", [(0.4, 0.4), (0.4, -0.1, 0.4), 0.4,
                                   (0.4, "a", 0.4)])
def test_bad_strengths_are_named(value):
  with pytest.raises(DataError, match=r"data.color_jitter=.* must be three "
                     r"strengths >= 0"):
    DataSettings.from_config(folder_config("/x", color_jitter=value))
