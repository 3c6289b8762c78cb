"""Compact bilinear pooling (docs/method.md §4.7) against a float64 numpy
transcription of fast-MPN-COV's `CBP.forward`, and the Tensor Sketch
property that defines it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax import ops
from gcp_jax.ops.compact_bilinear import sketch_hashes

RNG = np.random.default_rng(19)


def _reference_cbp(x: np.ndarray, h: np.ndarray, s: np.ndarray, d: int,
                   thresh: float = 1e-8) -> np.ndarray:
  """fast-MPN-COV `CBP.forward` in float64, image by image: dense count
  sketch matrices built from (h, s), the complex FFT of each sketch, the
  product of the spectra, the real part of the inverse FFT, summed over the
  positions, then sign(y) sqrt(|y| + thresh) and y / max(||y||, 1e-12).

  x: (B, H, W, C) -> (B, d).
  """
  b, c = x.shape[0], x.shape[-1]
  mats = np.zeros((2, c, d))
  for k in range(2):
    for i in range(c):
      mats[k, i, h[k, i]] = s[k, i]
  out = np.empty((b, d))
  for img in range(b):
    flat = x[img].reshape(-1, c).astype(np.float64)
    f1 = np.fft.fft(flat @ mats[0], axis=1)
    f2 = np.fft.fft(flat @ mats[1], axis=1)
    out[img] = np.real(np.fft.ifft(f1 * f2, axis=1)).sum(axis=0)
  out = np.sign(out) * np.sqrt(np.abs(out) + thresh)
  norm = np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
  return out / norm


def test_hashes_fixed_by_seed_in_range():
  h, s = sketch_hashes(12, 40, 1)
  h2, s2 = sketch_hashes.__wrapped__(12, 40, 1)     # uncached: same draw
  np.testing.assert_array_equal(h, h2)
  np.testing.assert_array_equal(s, s2)
  assert h.shape == s.shape == (2, 12)
  assert h.min() >= 0 and h.max() < 40
  assert set(np.unique(s)) <= {-1.0, 1.0}
  assert not np.array_equal(h[0], h[1])             # two independent hashes
  assert not np.array_equal(sketch_hashes(12, 40, 2)[0], h)
  with pytest.raises(ValueError, match="positive"):
    sketch_hashes(0, 40)


def _every_bin_hit(h: np.ndarray, d: int) -> bool:
  """Whether some channel pair (i, j) lands in each bin (h1(i) + h2(j)) mod d.
  An empty bin holds 0 up to the FFT's rounding, whose sign the signed
  square root turns into +-sqrt(1e-8): noise in both codes, so the
  comparisons use maps whose every bin is hit (as at full size, C^2 >> D)."""
  return len(np.unique((h[0][:, None] + h[1][None, :]) % d)) == d


@pytest.mark.parametrize("c,d,seed", [(12, 16, 1), (16, 37, 5)])
def test_matches_reference_transcription(c, d, seed):
  """float32 and float64 (odd D: the irfft length matters)."""
  x = RNG.standard_normal((2, 3, 4, c))
  h, s = sketch_hashes(c, d, seed)
  assert _every_bin_hit(h, d)
  want = _reference_cbp(x, h, s, d)
  got = ops.compact_bilinear(jnp.asarray(x, jnp.float32), output_dim=d,
                             seed=seed)
  assert got.shape == (2, d) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  with jax.enable_x64(True):
    got64 = ops.compact_bilinear(jnp.asarray(x), output_dim=d, seed=seed)
    assert got64.dtype == jnp.float64
    np.testing.assert_allclose(got64, want, rtol=1e-10, atol=1e-12)


def test_tokens_and_registry():
  """(B, N, C) tokens are positions too; the registry entry passes options
  and reports D from them."""
  x = RNG.standard_normal((2, 5, 12))
  rep = ops.get_representation("cbp")
  h, s = sketch_hashes(12, 24, 3)
  assert _every_bin_hit(h, 24)
  got = rep(jnp.asarray(x, jnp.float32), output_dim=24, seed=3)
  want = _reference_cbp(x[:, :, None, :], h, s, 24)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  assert rep.output_dim(12, output_dim=24, seed=3) == 24
  assert rep.output_dim(512) == 8192


def test_sketch_inner_products_estimate_squared_inner_products():
  """<y(x), y(x')> estimates <x x^T, x' x'^T>_F = (x^T x')^2 without bias
  over the random hashes: its mean over 1000 seeds at D = 32 (collisions in
  every draw) is within 5 % of (x^T x')^2, while single draws err by 20 % and
  more; at D = 8192 the C^2 = 100 pairs of seed 1 do not collide and the
  estimate is exact. Fixed seeds throughout: deterministic."""
  rng = np.random.default_rng(0)
  c = 10
  x = rng.standard_normal(c)
  xp = x + 0.5 * rng.standard_normal(c)
  target = float(x @ xp) ** 2
  with jax.enable_x64(True):
    feats = jnp.asarray(np.stack([x, xp])[:, None, :])   # (2, 1, C), f64
    def estimate(d, seed):
      y = np.asarray(ops.tensor_sketch(feats, output_dim=d, seed=seed))
      return float(y[0] @ y[1])
    draws = np.array([estimate(32, seed) for seed in range(1000)])
    exact = estimate(8192, 1)
  assert abs(draws.mean() - target) < 0.05 * target
  assert np.median(np.abs(draws - target)) > 0.1 * target
  np.testing.assert_allclose(exact, target, rtol=1e-12)


def test_sum_over_positions_not_mean():
  """Doubling the map (the same positions twice) doubles y."""
  x = jnp.asarray(RNG.standard_normal((1, 2, 2, 4)), jnp.float32)
  y1 = ops.tensor_sketch(x, output_dim=8)
  y2 = ops.tensor_sketch(jnp.concatenate([x, x], axis=1), output_dim=8)
  np.testing.assert_allclose(y2, 2 * y1, rtol=1e-5, atol=1e-6)
