"""Matrix -> vector maps that feed the classifier.

Synopsis:
  z = triu_vec(root)            # (B, C, C) -> (B, C (C + 1) / 2)
  z = flatten(bil)              # (B, C, C) -> (B, C * C), for B-CNN
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gcp_jax.ops.linalg import check_square


def triu_flat_indices(n: int) -> np.ndarray:
  """Flat indices i * n + j of the upper triangle (i <= j), row-major.

  Equal to the order of `numpy.triu_indices(n)`:
  (0,0), (0,1), ..., (0,n-1), (1,1), ..., (n-1,n-1).
  """
  rows, cols = np.triu_indices(n)
  return rows * n + cols


@functools.cache
def _untriu_indices(n: int) -> np.ndarray:
  """(n * n,) position in the triu vector of each flat entry i * n + j of an
  n x n matrix; n (n + 1) / 2 (one past the end) below the diagonal."""
  flat = triu_flat_indices(n)
  positions = np.full(n * n, flat.size, np.int32)
  positions[flat] = np.arange(flat.size, dtype=np.int32)
  return positions


@jax.custom_vjp
def triu_vec(mat: jax.Array) -> jax.Array:
  """Upper triangle including the diagonal, row-major, unscaled
  (docs/method.md §5.1).

  Off-diagonal entries appear once with weight 1 (no sqrt(2)), and the order
  is that of the reference `Triuvec` (the non-zeros of `ones(n, n).triu()`),
  so fully-connected weights trained on the PyTorch vectors port 1:1.

  The map is linear. Its backward pass is a gather too: the cotangent g,
  extended by one zero, is read at `_untriu_indices` (the upper triangle
  gets g, the lower triangle zero). Autodiff of the forward gather would
  instead scatter-add g into zeros with a constant index array, which XLA
  constant-folds for seconds per compile when g is itself a constant (a
  sum loss). As a `custom_vjp` it supports reverse mode and
  forward-over-reverse (Hessian-vector products, `jax.hessian`), not
  `jax.jvp` through it directly.

  Args:
    mat: (..., n, n) matrices (the upper triangle is read; the lower ignored).

  Returns:
    (..., n (n + 1) / 2).
  """
  return _upper_triangle(mat)


def _upper_triangle(mat: jax.Array) -> jax.Array:
  """`triu_vec`'s value, as plain jnp (its own autodiff would scatter)."""
  check_square(mat, "triu_vec")
  n = mat.shape[-1]
  flat = mat.reshape(*mat.shape[:-2], n * n)
  return flat[..., triu_flat_indices(n)]


def _triu_vec_fwd(mat: jax.Array) -> tuple[jax.Array, None]:
  return _upper_triangle(mat), None


def _triu_vec_bwd(_, g: jax.Array) -> tuple[jax.Array]:
  size = g.shape[-1]
  n = int(round((np.sqrt(8 * size + 1) - 1) / 2))
  extended = jnp.concatenate([g, jnp.zeros((*g.shape[:-1], 1), g.dtype)],
                             axis=-1)
  full = extended[..., _untriu_indices(n)]
  return (full.reshape(*g.shape[:-1], n, n),)


triu_vec.defvjp(_triu_vec_fwd, _triu_vec_bwd)


def flatten(mat: jax.Array) -> jax.Array:
  """All n^2 entries, row-major: (..., n, n) -> (..., n * n) (B-CNN)."""
  check_square(mat, "flatten")
  return mat.reshape(*mat.shape[:-2], mat.shape[-1] * mat.shape[-2])
