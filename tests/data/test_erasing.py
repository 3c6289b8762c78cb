"""Random erasing (timm 0.4.12 `RandomErasing`, DeiT: p 0.25, 'pixel').

Box statistics are compared with an independent numpy sampler written from
timm's description; the erased images are checked for a single rectangle of
N(0, 1) noise with every other pixel bitwise untouched.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from gcp_jax.data import erasing

H, W = 32, 48  # not square: a swapped height / width would show
RNG = np.random.default_rng(0)
IMAGE = RNG.uniform(10.0, 11.0, (H, W, 3)).astype(np.float32)  # not N(0, 1)


def _reference_boxes(num, rng, area=(0.02, 1 / 3), aspect=(0.3, 1 / 0.3)):
  """timm's sampler: up to 10 tries of area fraction U(area) and log-uniform
  h / w; the first box with h < H and w < W, placed uniformly."""
  boxes = []
  for _ in range(num):
    for _ in range(10):
      target = rng.uniform(*area) * H * W
      ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
      h = int(round(math.sqrt(target * ratio)))
      w = int(round(math.sqrt(target / ratio)))
      if h < H and w < W:
        boxes.append((rng.integers(0, H - h + 1), rng.integers(0, W - w + 1),
                      h, w))
        break
  return np.array(boxes, dtype=float)


def _seeds(num, key=3):
  return tf.data.Dataset.range(num).map(
      lambda i: tf.stack([tf.constant(key, tf.int64), i]))


def test_box_statistics_match_timm_sampler():
  num = 3000
  ours = np.stack(list(_seeds(num).map(
      lambda s: erasing.erasing_box(tf.constant([H, W]), s)
  ).as_numpy_iterator())).astype(float)
  assert ours[:, 4].mean() > 0.99  # nearly always fits within 10 tries
  ours = ours[ours[:, 4] > 0, :4]
  top, left, h, w = ours.T
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + h <= H).all() and (left + w <= W).all()
  assert (h < H).all() and (w < W).all()
  reference = _reference_boxes(20_000, np.random.default_rng(1))

  def stats(boxes):
    top, left, h, w = boxes.T
    area = h * w / (H * W)
    return {"area": area, "log_aspect": np.log(h / w),
            "centre_y": (top + h / 2) / H, "centre_x": (left + w / 2) / W}

  got, expected = stats(ours), stats(reference)
  for key in got:
    standard_error = expected[key].std() / math.sqrt(len(ours))
    assert abs(got[key].mean() - expected[key].mean()) < 4 * standard_error
    np.testing.assert_allclose(np.quantile(got[key], [0.1, 0.5, 0.9]),
                               np.quantile(expected[key], [0.1, 0.5, 0.9]),
                               atol=0.06 if key == "log_aspect" else 0.02)
  # Areas span the range (0.02, 1/3) of the image.
  assert got["area"].min() < 0.03 and got["area"].max() > 0.3


def _erased(num, **kwargs):
  x = tf.constant(IMAGE)
  return np.stack(list(_seeds(num, key=7).map(
      lambda s: erasing.random_erasing(x, s, **kwargs)
  ).as_numpy_iterator()))


def _box_of(mask):
  """The bounding box of a 2-D mask, and whether the mask fills it."""
  rows, columns = np.nonzero(mask)
  box = (slice(rows.min(), rows.max() + 1),
         slice(columns.min(), columns.max() + 1))
  return box, mask[box].all()


def test_pixel_mode_erases_one_noise_rectangle_with_probability_p():
  num = 800
  outputs = _erased(num, probability=0.25)
  changed = outputs != IMAGE
  erased = changed.any(axis=(1, 2, 3))
  assert abs(erased.mean() - 0.25) < 4 * math.sqrt(0.25 * 0.75 / num)
  noise = []
  for out, mask in zip(outputs[erased], changed[erased]):
    mask = mask.any(axis=-1)
    box, filled = _box_of(mask)
    assert filled  # one rectangle, every channel
    np.testing.assert_array_equal(out[~mask], IMAGE[~mask])  # untouched
    area = mask.sum() / (H * W)
    assert 0.01 < area < 0.37
    noise.append(out[box].reshape(-1, 3))
  noise = np.concatenate(noise)
  assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1.0) < 0.05
  assert np.abs(np.corrcoef(noise.T)[0, 1:]).max() < 0.1  # per channel


@pytest.mark.parametrize("mode", ["const", "rand"])
def test_const_and_rand_modes(mode):
  outputs = _erased(40, probability=1.0, mode=mode)
  for out in outputs:
    mask = (out != IMAGE).any(axis=-1)
    box, filled = _box_of(mask)
    assert filled
    colours = np.unique(out[box].reshape(-1, 3), axis=0)
    assert len(colours) == 1
    if mode == "const":
      np.testing.assert_array_equal(colours, 0.0)


def test_several_boxes_share_the_area_budget():
  """count=3: 1..3 boxes, each with (0.02, 1/3) / (number of boxes) of the
  area, so together never more than about a third."""
  boxes = np.stack(list(_seeds(300).map(
      lambda s: erasing.erasing_box(tf.constant([H, W]), s, num_boxes=3)
  ).as_numpy_iterator())).astype(float)
  areas = boxes[:, 2] * boxes[:, 3] / (H * W)
  assert areas.max() < 1 / 9 + 0.02 and areas.min() < 0.01
  masks = (_erased(200, probability=1.0, count=3) != IMAGE).any(axis=-1)
  assert masks.mean(axis=(1, 2)).max() < 1 / 3 + 0.04
  assert not all(_box_of(m)[1] for m in masks)  # some got several boxes


def test_deterministic_eager_equals_dataset_and_off_is_identity():
  x = tf.constant(IMAGE)
  mapped = _erased(6, probability=0.5)
  for i in range(6):
    seed = tf.constant([7, i], tf.int64)
    np.testing.assert_array_equal(
        erasing.random_erasing(x, seed, probability=0.5), mapped[i])
  assert erasing.random_erasing(x, seed, probability=0.0) is x
  with pytest.raises(ValueError, match="mode"):
    erasing.random_erasing(x, seed, probability=0.5, mode="zeros")
