"""Mixup / CutMix on device (timm 0.4.12 'batch' mode, DeiT settings).

Checks against numpy: the mixed images and soft targets for the returned
lambda, CutMix's lambda against the pixels that actually changed, the draw
statistics against an independent sampler of timm's rules, the identity
settings, jit and per-device use under shard_map.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from gcp_jax.data import mixing

B, H, W, C, K = 8, 12, 10, 3, 5
RNG = np.random.default_rng(0)
IMAGES = RNG.normal(size=(B, H, W, C)).astype(np.float32)  # all distinct
LABELS = np.array([0, 1, 2, 3, 4, 0, 1, 2], np.int32)


def _one_hot(labels, smoothing):
  """Independent reference of smoothed one-hot targets."""
  targets = np.full((len(labels), K), smoothing / K)
  targets[np.arange(len(labels)), labels] += 1.0 - smoothing
  return targets


def _keys(num, seed=0):
  return jax.random.split(jax.random.key(seed), num)


def _sample(num, **kwargs):
  return jax.vmap(lambda k: mixing.sample_mix(k, H, W, **kwargs))(_keys(num))


def test_mixup_image_and_targets_for_the_returned_lambda():
  for key in _keys(5):
    params = mixing.sample_mix(key, H, W, mixup_alpha=0.8, cutmix_alpha=0.0)
    assert int(params.mode) == mixing.MIXUP
    lam = float(params.lam)
    images, targets = mixing.apply_mix(params, IMAGES, LABELS, K,
                                       label_smoothing=0.1)
    np.testing.assert_allclose(images, lam * IMAGES
                               + (1 - lam) * IMAGES[::-1], rtol=1e-6,
                               atol=1e-6)
    one_hot = _one_hot(LABELS, 0.1)
    np.testing.assert_allclose(targets, lam * one_hot
                               + (1 - lam) * one_hot[::-1], atol=1e-6)
    # mix_batch is sample_mix followed by apply_mix.
    again = mixing.mix_batch(key, IMAGES, LABELS, K, cutmix_alpha=0.0)
    np.testing.assert_array_equal(again[0], images)


def test_cutmix_lambda_is_the_fraction_left_untouched():
  seen_clipped = False
  for key in _keys(40, seed=1):
    params = mixing.sample_mix(key, H, W, mixup_alpha=0.0, cutmix_alpha=1.0)
    assert int(params.mode) == mixing.CUTMIX
    images, targets = mixing.apply_mix(params, IMAGES, LABELS, K,
                                       label_smoothing=0.0)
    images = np.asarray(images)
    changed = (images != IMAGES).any(axis=-1)        # (B, H, W)
    assert (changed == changed[0]).all()             # one box per batch
    fraction = changed[0].mean()
    assert float(params.lam) == pytest.approx(1.0 - fraction, abs=1e-6)
    if changed[0].any():
      rows, columns = np.nonzero(changed[0])
      top, bottom, left, right = np.asarray(params.box)
      assert (rows.min(), rows.max() + 1, columns.min(),
              columns.max() + 1) == (top, bottom, left, right)
      assert changed[0, top:bottom, left:right].all()  # a full rectangle
      np.testing.assert_array_equal(images[:, top:bottom, left:right],
                                    IMAGES[::-1, top:bottom, left:right])
      seen_clipped |= top == 0 or left == 0 or bottom == H or right == W
    np.testing.assert_array_equal(images[:, ~changed[0]],
                                  IMAGES[:, ~changed[0]])
    one_hot = _one_hot(LABELS, 0.0)
    lam = float(params.lam)
    np.testing.assert_allclose(targets, lam * one_hot
                               + (1 - lam) * one_hot[::-1], atol=1e-6)
  assert seen_clipped  # the correction mattered at least once


def _reference_cutmix_lams(num, rng):
  """timm's CutMix lambda: Beta(1, 1), box sides int(side * sqrt(1 - lam))
  halved around a uniform centre, clipped, lam = 1 - box area / image."""
  lams = []
  for _ in range(num):
    ratio = math.sqrt(1 - rng.beta(1.0, 1.0))
    half_h, half_w = int(H * ratio) // 2, int(W * ratio) // 2
    cy, cx = rng.integers(0, H), rng.integers(0, W)
    box_h = min(cy + half_h, H) - max(cy - half_h, 0)
    box_w = min(cx + half_w, W) - max(cx - half_w, 0)
    lams.append(1 - box_h * box_w / (H * W))
  return np.array(lams)


def test_draw_statistics_match_timm():
  num = 4000
  params = _sample(num, mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.6,
                   switch_prob=0.5)
  mode, lam = np.asarray(params.mode), np.asarray(params.lam)
  sd = math.sqrt(0.25 / num)
  assert abs((mode == mixing.NO_MIX).mean() - 0.4) < 5 * sd
  assert abs((mode == mixing.CUTMIX).mean() - 0.3) < 5 * sd
  assert (lam[mode == mixing.NO_MIX] == 1).all()
  mixup = lam[mode == mixing.MIXUP]
  # Beta(0.8, 0.8): mean 1/2, variance 0.64 / (2.56 * 2.6).
  assert abs(mixup.mean() - 0.5) < 5 * math.sqrt(0.0962 / len(mixup))
  assert abs(mixup.var() - 0.64 / (2.56 * 2.6)) < 0.015
  cutmix = lam[mode == mixing.CUTMIX]
  reference = _reference_cutmix_lams(20_000, np.random.default_rng(2))
  assert abs(cutmix.mean() - reference.mean()) < 5 * reference.std() / (
      math.sqrt(len(cutmix)))
  np.testing.assert_allclose(np.quantile(cutmix, [0.1, 0.5, 0.9]),
                             np.quantile(reference, [0.1, 0.5, 0.9]),
                             atol=0.04)


@pytest.mark.parametrize("kwargs", [
    {"mixup_alpha": 0.0, "cutmix_alpha": 0.0},
    {"prob": 0.0},
])
def test_off_settings_are_the_identity(kwargs):
  for key in _keys(3):
    images, targets = mixing.mix_batch(key, IMAGES, LABELS, K, **kwargs)
    np.testing.assert_array_equal(images, IMAGES)
    np.testing.assert_allclose(targets, _one_hot(LABELS, 0.1), atol=1e-7)


def test_targets_are_distributions():
  for key in _keys(20, seed=3):
    _, targets = mixing.mix_batch(key, IMAGES, LABELS, K)
    assert (np.asarray(targets) >= 0).all()
    np.testing.assert_allclose(np.sum(targets, axis=1), 1.0, atol=1e-6)


def test_jit_equals_eager_and_keeps_dtype():
  mix = functools.partial(mixing.mix_batch, num_classes=K)
  jitted = jax.jit(mix)
  for key in _keys(6, seed=4):
    for got, want in zip(jitted(key, IMAGES, LABELS),
                         mix(key, IMAGES, LABELS)):
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  half = jitted(key, IMAGES.astype(jnp.bfloat16), LABELS)
  assert half[0].dtype == jnp.bfloat16 and half[1].dtype == jnp.float32


def test_per_device_mixing_under_shard_map():
  """Each device mixes its own slice, pairing within it, with its own key
  (the base key folded with the device index)."""
  devices = jax.device_count()
  mesh = jax.make_mesh((devices,), ("data",))
  images = RNG.normal(size=(2 * devices, H, W, C)).astype(np.float32)
  labels = np.arange(2 * devices, dtype=np.int32) % K

  def per_device(key, x, y):
    key = jax.random.fold_in(key, jax.lax.axis_index("data"))
    return mixing.mix_batch(key, x, y, K)

  mapped = jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P("data"), P("data")),
      out_specs=(P("data"), P("data"))))
  key = jax.random.key(5)
  sharding = jax.sharding.NamedSharding(mesh, P("data"))
  got_images, got_targets = map(np.asarray, mapped(
      key, jax.device_put(images, sharding),
      jax.device_put(labels, sharding)))
  for d in range(devices):
    part = slice(2 * d, 2 * d + 2)
    want = mixing.mix_batch(jax.random.fold_in(key, d), images[part],
                            labels[part], K)
    np.testing.assert_allclose(got_images[part], want[0], atol=1e-6)
    np.testing.assert_allclose(got_targets[part], want[1], atol=1e-6)
