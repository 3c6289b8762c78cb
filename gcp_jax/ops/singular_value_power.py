"""Singular-value power normalisation (svPN) by power iteration.

Synopsis:
  z = svpn(cov, start=v0)       # ~ cov / sqrt(sigma_max) for K = 1, alpha = 1/2
"""

import jax
import jax.numpy as jnp

from gcp_jax.ops.linalg import HIGHEST, check_square, safe_norm, upcast

# Added to the denominator of the residual term, as in the reference svPN.
RESIDUAL_EPS = 1e-5


def _matvec(mat, v):
  return jnp.einsum("...ij,...j->...i", mat, v, precision=HIGHEST)


def _unit(v):
  return v / safe_norm(v, axis=-1, keepdims=True)


def svpn(mat: jax.Array, alpha: float = 0.5, num_sv: int = 1,
         num_iters: int = 1, start: jax.Array | None = None) -> jax.Array:
  """Power-normalises the top singular values, rescales the rest.

  DropCov's transformer `svPN` (`Transformers/src/normalization/svPN.py`).
  For k = 1..K (K = `num_sv`), from the same start vector v (any scale) run
  `num_iters` power steps

      u = M v / ||M v||,   v = M^T u / ||M^T u||,

  then take s_k = u^T M v with the u and v of the last step, and deflate
  M <- M - s_k u v^T. The output is

      sum_k s_k^alpha u_k v_k^T + M_K / (s_K^(1 - alpha) + 1e-5),

  with M_K the residual after K deflations. With K = 1 and alpha = 1/2 this
  is about M / sqrt(s_1), a cheap stand-in for the matrix square root. Works
  for non-symmetric (cross-covariance) matrices; finite for the zero matrix.
  The reference learns the start vector (a parameter initialised N(0, 1):
  `GCPHead` does the same); here it is an argument.

  Args:
    mat: (..., n, n) matrices.
    alpha: power applied to the top singular values.
    num_sv: K, the number of singular triplets estimated.
    num_iters: power steps per triplet, >= 1 (the reference uses 1).
    start: (n,) or (..., n) start vector; default all ones (the reference's
      `init_weight='one'`).

  Returns:
    (..., n, n) in the compute dtype.
  """
  mat = upcast(mat)
  check_square(mat, "svpn")
  if num_sv < 1 or num_iters < 1:
    raise ValueError(f"svpn: need num_sv >= 1 and num_iters >= 1, got "
                     f"num_sv={num_sv}, num_iters={num_iters}.")
  if start is None:
    start = jnp.ones(mat.shape[-1], mat.dtype)
  start = jnp.broadcast_to(upcast(start), mat.shape[:-1])
  out = jnp.zeros_like(mat)
  for _ in range(num_sv):
    v = start
    for _ in range(num_iters):
      u = _unit(_matvec(mat, v))
      v = _unit(_matvec(jnp.swapaxes(mat, -1, -2), u))
    s = jnp.sum(u * _matvec(mat, v), axis=-1)    # = ||M^T u|| >= 0
    uv = u[..., :, None] * v[..., None, :]
    mat = mat - s[..., None, None] * uv
    # Powers of s at least the smallest normal number: equal wherever
    # M != 0, and finite with a finite gradient for the zero matrix.
    s = jnp.maximum(s, jnp.finfo(s.dtype).tiny)[..., None, None]
    out = out + s ** alpha * uv
  return out + mat / (s ** (1.0 - alpha) + RESIDUAL_EPS)
