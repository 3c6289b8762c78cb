"""Matrix -> vector maps that feed the classifier.

Synopsis:
  z = triu_vec(root)            # (B, C, C) -> (B, C (C + 1) / 2)
  z = flatten(bil)              # (B, C, C) -> (B, C * C), for B-CNN
"""

import jax
import numpy as np

from gcp_jax.ops.linalg import check_square


def triu_flat_indices(n: int) -> np.ndarray:
  """Flat indices i * n + j of the upper triangle (i <= j), row-major.

  Equal to the order of `numpy.triu_indices(n)`:
  (0,0), (0,1), ..., (0,n-1), (1,1), ..., (n-1,n-1).
  """
  rows, cols = np.triu_indices(n)
  return rows * n + cols


def triu_vec(mat: jax.Array) -> jax.Array:
  """Upper triangle including the diagonal, row-major, unscaled (METHOD s. 3).

  Off-diagonal entries appear once with weight 1 (no sqrt(2)), and the order
  is that of the reference `Triuvec` (the non-zeros of `ones(n, n).triu()`),
  so fully-connected weights trained on the PyTorch vectors port 1:1.

  Args:
    mat: (..., n, n) matrices (the upper triangle is read; the lower ignored).

  Returns:
    (..., n (n + 1) / 2).
  """
  check_square(mat, "triu_vec")
  n = mat.shape[-1]
  flat = mat.reshape(*mat.shape[:-2], n * n)
  return flat[..., triu_flat_indices(n)]


def flatten(mat: jax.Array) -> jax.Array:
  """All n^2 entries, row-major: (..., n, n) -> (..., n * n) (B-CNN)."""
  check_square(mat, "flatten")
  return mat.reshape(*mat.shape[:-2], mat.shape[-1] * mat.shape[-2])
