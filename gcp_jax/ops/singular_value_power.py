"""Singular-value power normalisation (svPN) by power iteration.

Synopsis:
  z = svpn(cov)                 # ~ cov / sqrt(sigma_max) for k = 1, alpha = 1/2
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

  For k = 1..K (K = `num_sv`): from v = start / ||start|| run `num_iters`
  power steps u = M v / ||M v||, v = M^T u / ||M^T u||; then
  s_k = ||M v||, u_k = M v / s_k, v_k = v, and deflate M <- M - s_k u_k v_k^T.
  The output is

      sum_k s_k^alpha u_k v_k^T + M_K / (s_K^(1 - alpha) + 1e-5),

  with M_K the residual after K deflations. With K = 1 and alpha = 1/2 this is
  about M / sqrt(s_1): the cheap approximation of the matrix square root used
  by DropCov's transformer code (METHOD section 4). Works for non-symmetric
  (cross-covariance) matrices. Finite for the zero matrix.

  Args:
    mat: (..., n, n) matrices.
    alpha: power applied to the top singular values.
    num_sv: K, the number of singular triplets estimated.
    num_iters: power steps per triplet (the reference uses 1).
    start: (n,) or (..., n) start vector (the reference may learn it);
      default all ones.

  Returns:
    (..., n, n) in the compute dtype.
  """
  mat = upcast(mat)
  check_square(mat, "svpn")
  if num_sv < 1 or num_iters < 0:
    raise ValueError(f"svpn: need num_sv >= 1 and num_iters >= 0, got "
                     f"num_sv={num_sv}, num_iters={num_iters}.")
  if start is None:
    start = jnp.ones(mat.shape[-1], mat.dtype)
  start = jnp.broadcast_to(upcast(start), mat.shape[:-1])
  mt = jnp.swapaxes(mat, -1, -2)
  out = jnp.zeros_like(mat)
  for _ in range(num_sv):
    v = _unit(start)
    for _ in range(num_iters):
      u = _unit(_matvec(mat, v))
      v = _unit(_matvec(mt, u))
    w = _matvec(mat, v)
    s = safe_norm(w, axis=-1)
    u = w / s[..., None]
    rank_one = s[..., None, None] * u[..., :, None] * v[..., None, :]
    out = out + s[..., None, None] ** (alpha - 1.0) * rank_one
    mat = mat - rank_one
    mt = jnp.swapaxes(mat, -1, -2)
  return out + mat / (s[..., None, None] ** (1.0 - alpha) + RESIDUAL_EPS)
