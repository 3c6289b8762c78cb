"""Numerical conventions shared by every op in `gcp_jax.ops`.

The GCP head is numerically sensitive (chained matmuls in Newton-Schulz, traces
that can vanish), so all ops follow one policy (docs/design.md, 'Precision'
and 'Degenerate inputs stay finite'):

* inputs are promoted to at least float32 (bf16/f16 in, f32 out; f64 stays f64
  so tests can run in double precision);
* every matrix product uses `lax.Precision.HIGHEST`, which overrides
  `jax_default_matmul_precision` and the TF32/bf16 defaults of GPUs and TPUs.

Synopsis:
  x = upcast(x)             # dtype policy
  y = matmul(a, b)          # batched (..., n, k) @ (..., k, m) at HIGHEST
"""

import jax
import jax.numpy as jnp
from jax import lax

HIGHEST = lax.Precision.HIGHEST


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
  """The dtype GCP math runs in: `dtype` promoted to at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def upcast(x: jax.Array) -> jax.Array:
  """Casts `x` to `compute_dtype(x.dtype)` (no-op for f32/f64)."""
  x = jnp.asarray(x)
  return x.astype(compute_dtype(x.dtype))


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """Batched matrix product `a @ b` at `Precision.HIGHEST`."""
  return jnp.matmul(a, b, precision=HIGHEST)


def batch_trace(mat: jax.Array) -> jax.Array:
  """Trace of each matrix: (..., n, n) -> (...)."""
  return jnp.trace(mat, axis1=-2, axis2=-1)


def eye_like(mat: jax.Array) -> jax.Array:
  """Identity of shape (1, ..., 1, n, n) broadcastable against `mat`."""
  n = mat.shape[-1]
  return jnp.eye(n, dtype=mat.dtype).reshape((1,) * (mat.ndim - 2) + (n, n))


def check_square(mat: jax.Array, name: str) -> None:
  """Raises ValueError unless `mat` is a stack of square matrices (..., n, n)."""
  if mat.ndim < 2 or mat.shape[-1] != mat.shape[-2]:
    raise ValueError(
        f"{name} expects square matrices of shape (..., n, n), got shape "
        f"{tuple(mat.shape)}.")


def safe_norm(x: jax.Array, axis, keepdims: bool = False) -> jax.Array:
  """Euclidean norm whose value and gradient are finite at x = 0.

  sqrt(max(sum x^2, tiny)): identical to the norm wherever sum x^2 > tiny
  (the smallest normal number of the dtype), and a constant with zero gradient
  below it, where `jnp.linalg.norm` would give a NaN gradient.
  """
  sq = jnp.sum(x * x, axis=axis, keepdims=keepdims)
  return jnp.sqrt(jnp.maximum(sq, jnp.finfo(sq.dtype).tiny))
