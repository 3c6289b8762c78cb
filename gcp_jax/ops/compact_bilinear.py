"""Compact bilinear pooling (CBP): a Tensor Sketch of bilinear pooling.

Synopsis:
  z = compact_bilinear(feats)                   # (B, H, W, C) -> (B, 8192)
  z = compact_bilinear(feats, output_dim=4096, seed=3)
  y = tensor_sketch(feats)                      # the same before sqrt and l2
  h, s = sketch_hashes(512, 8192, seed=1)       # the fixed hashes, numpy

The representation never forms the (C, C) bilinear matrix: each local feature
x is sketched into D bins twice, with fixed random hashes, and the two
sketches are circularly convolved (through the FFT), which is a sketch of
x (x) x whose inner products approximate those of the outer products
(docs/method.md §4.7).
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gcp_jax.ops.covariance import as_positions
from gcp_jax.ops.elementwise_power import SIGNED_POWER_EPS, signed_power
from gcp_jax.ops.linalg import HIGHEST, safe_norm

# fast-MPN-COV's `CBP(projDim=8192)`, the size its main.py configures.
DEFAULT_OUTPUT_DIM = 8192
# The seed fast-MPN-COV passes to `torch.manual_seed` before drawing the
# hashes; here it seeds numpy, so the values differ (docs/design.md).
DEFAULT_SEED = 1


@functools.lru_cache(maxsize=32)
def sketch_hashes(channels: int, output_dim: int,
                  seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
  """The two count sketches' hashes and signs, a function of the arguments.

  Drawn with `numpy.random.default_rng(seed)` in the reference's order: the
  bins h_1, h_2 ~ U{0, ..., D - 1}^C, then the signs s_1, s_2 ~ U{-1, +1}^C.

  Returns:
    h: (2, C) int64 bins; s: (2, C) float64 signs. Read-only (cached).
  """
  if channels < 1 or output_dim < 1:
    raise ValueError(f"sketch_hashes: channels and output_dim must be "
                     f"positive, got {channels} and {output_dim}.")
  rng = np.random.default_rng(seed)
  h = rng.integers(0, output_dim, size=(2, channels))
  s = (2 * rng.integers(0, 2, size=(2, channels)) - 1).astype(np.float64)
  h.flags.writeable = False
  s.flags.writeable = False
  return h, s


@functools.lru_cache(maxsize=32)
def _sketch_matrices(channels: int, output_dim: int, seed: int) -> np.ndarray:
  """(2, C, D) count-sketch matrices: S_k[i, h_k(i)] = s_k(i), else 0."""
  h, s = sketch_hashes(channels, output_dim, seed)
  mats = np.zeros((2, channels, output_dim), np.float32)
  rows = np.arange(channels)
  for k in range(2):
    mats[k, rows, h[k]] = s[k]
  mats.flags.writeable = False
  return mats


def compact_bilinear(features: jax.Array,
                     output_dim: int = DEFAULT_OUTPUT_DIM,
                     seed: int = DEFAULT_SEED,
                     eps: float = SIGNED_POWER_EPS) -> jax.Array:
  """Tensor Sketch compact bilinear pooling, signed sqrt, l2.

  With the M local features x_m in R^C of a sample, the count sketches
  C_k(x) = S_k^T x in R^D (S_k: (C, D), one entry s_k(i) = +-1 per row, in
  column h_k(i)), and * the circular convolution of length D,

      y = sum_m C_1(x_m) * C_2(x_m)
        = sum_m IFFT(FFT(S_1^T x_m) o FFT(S_2^T x_m)),
      z = sign(y) o sqrt(|y| + eps),    z <- z / ||z||_2.

  y is the sum over positions (not the mean) and the sketch of
  sum_m x_m x_m^T: E[<y(X), y(X')>] = <X X^T, X' X'^T>_F over the random
  hashes. The hashes are constants of the function, fixed by `seed`
  (`sketch_hashes`), never trained. The transforms are real (rfft / irfft):
  the reference's complex FFT of a real signal and the real part of its
  inverse compute the same y; the inverse is linear, so the sum over
  positions is taken on the spectra, before one inverse per sample.

  Args:
    features: (B, H, W, C) conv features (M = H W) or (B, N, C) tokens.
    output_dim: D, the sketch length (8192 in fast-MPN-COV).
    seed: seeds the hashes.
    eps: added under the square root (1e-8, the reference's `thresh`).

  Returns:
    (B, D) unit-norm vectors in float32 (float64 if features are float64).

  References:
    Gao et al., "Compact Bilinear Pooling", CVPR 2016; fast-MPN-COV
    `src/representation/CBP.py` (class `CBP`, `projDim=8192`,
    `thresh=1e-8`).
  """
  y = tensor_sketch(features, output_dim, seed)
  z = signed_power(y, 0.5, eps)
  return z / safe_norm(z, axis=-1, keepdims=True)


def tensor_sketch(features: jax.Array, output_dim: int = DEFAULT_OUTPUT_DIM,
                  seed: int = DEFAULT_SEED) -> jax.Array:
  """y = sum_m IFFT(FFT(S_1^T x_m) o FFT(S_2^T x_m)), before normalisation.

  Args and the equation: `compact_bilinear`. Returns (B, D), a sketch of the
  summed outer products: for one position, E[<y(x), y(x')>] = (x^T x')^2.
  """
  x = as_positions(features, "tensor_sketch")
  mats = jnp.asarray(_sketch_matrices(x.shape[-1], output_dim, seed), x.dtype)
  sketch = lambda k: jnp.einsum("bmc,cd->bmd", x, mats[k],  # noqa: E731
                                precision=HIGHEST)
  spectrum = jnp.sum(jnp.fft.rfft(sketch(0), axis=-1)
                     * jnp.fft.rfft(sketch(1), axis=-1), axis=1)
  return jnp.fft.irfft(spectrum, n=output_dim, axis=-1)


def sketch_output_dim(channels: int, output_dim: int = DEFAULT_OUTPUT_DIM,
                      **options: Any) -> int:
  """D of `compact_bilinear` for any C: its `output_dim` option."""
  del channels, options
  return output_dim
