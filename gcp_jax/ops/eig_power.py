"""Exact matrix power normalisation (MPN-COV) through an eigendecomposition.

Synopsis:
  root = matrix_power_eig(cov, p=0.5)       # U diag(max(lam, c)^p) U^T

The gradient is the Daleckii-Krein formula with divided differences written to
stay finite for repeated and zero eigenvalues, which is exactly where the
textbook eigenvector gradient (terms 1 / (lam_i - lam_j)) returns NaN or Inf
(jax#669, pytorch#49886). Covariances at ImageNet resolution are always
singular (d = 256 channels from M = 196 positions), so this matters.
"""

import functools

import jax
import jax.numpy as jnp

from gcp_jax.ops.linalg import check_square, eye_like, matmul, upcast

# Below this log-ratio of two eigenvalues the divided difference is taken from
# its Taylor expansion p (1 + (p - 1) L / 2); its error is O(L^2) < 1e-8.
_TAYLOR_LOG_RATIO = 1e-4


def eigenvalue_floor(lam: jax.Array, eps: float) -> jax.Array:
  """Clamp level c = max(eps * lam_max, sqrt(tiny)) per matrix: (..., n) -> (...)."""
  tiny = jnp.finfo(lam.dtype).tiny
  return jnp.maximum(eps * jnp.max(lam, axis=-1), jnp.sqrt(tiny))


def power_divided_differences(lam: jax.Array, p: float,
                              floor: jax.Array) -> jax.Array:
  """Divided differences of g(lam) = max(lam, c)^p: (..., n) -> (..., n, n).

      F_ij = (g(lam_i) - g(lam_j)) / (lam_i - lam_j),   F_ii = g'(lam_i).

  With mu = max(lam, c), the power part is computed without cancellation as
  mu_lo^(p-1) expm1(p L) / expm1(L), L = log1p((mu_hi - mu_lo) / mu_lo), and
  the clamp contributes (mu_i - mu_j) / (lam_i - lam_j): 1 when both
  eigenvalues are above c, 0 when both are clamped, in (0, 1] otherwise.
  Every entry is bounded by |p| c^(p-1).
  """
  mu = jnp.maximum(lam, floor[..., None])
  mu_i, mu_j = mu[..., :, None], mu[..., None, :]
  hi, lo = jnp.maximum(mu_i, mu_j), jnp.minimum(mu_i, mu_j)
  log_ratio = jnp.log1p((hi - lo) / lo)
  near = log_ratio < _TAYLOR_LOG_RATIO
  safe = jnp.where(near, 1.0, log_ratio)
  ratio = jnp.where(near, p * (1.0 + 0.5 * (p - 1.0) * log_ratio),
                    jnp.expm1(p * safe) / jnp.expm1(safe))
  power_dd = lo ** (p - 1.0) * ratio

  above = lam > floor[..., None]
  above_i, above_j = above[..., :, None], above[..., None, :]
  mixed = above_i != above_j
  dlam = jnp.where(mixed, lam[..., :, None] - lam[..., None, :], 1.0)
  clamp_dd = jnp.where(above_i & above_j, 1.0,
                       jnp.where(mixed, (mu_i - mu_j) / dlam, 0.0))
  return power_dd * clamp_dd


def _eigh(cov):
  lam, u = jnp.linalg.eigh(cov, symmetrize_input=True)
  return lam, u


def _reconstruct(u, diag):
  return matmul(u * diag[..., None, :], jnp.swapaxes(u, -1, -2))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _power(cov, p, eps):
  lam, u = _eigh(cov)
  floor = eigenvalue_floor(lam, eps)
  return _reconstruct(u, jnp.maximum(lam, floor[..., None]) ** p)


@_power.defjvp
def _power_jvp(p, eps, primals, tangents):
  (cov,), (dcov,) = primals, tangents
  lam, u = _eigh(cov)
  floor = eigenvalue_floor(lam, eps)
  out = _reconstruct(u, jnp.maximum(lam, floor[..., None]) ** p)
  ut = jnp.swapaxes(u, -1, -2)
  dsym = 0.5 * (dcov + jnp.swapaxes(dcov, -1, -2))
  dlam = matmul(matmul(ut, dsym), u)          # U^T dSigma U
  inner = dlam * power_divided_differences(lam, p, floor)
  # Clamped eigenvalues sit at c = eps * lam_max, which moves with lam_max
  # (d lam_max = dlam[-1, -1]; eigh sorts ascending).
  relative = eps * lam[..., -1] > jnp.sqrt(jnp.finfo(lam.dtype).tiny)
  dfloor = jnp.where(relative, eps * dlam[..., -1, -1], 0.0)
  clamped = lam <= floor[..., None]
  dclamped = jnp.where(clamped, p * floor[..., None] ** (p - 1.0)
                       * dfloor[..., None], 0.0)
  inner = inner + dclamped[..., None, :] * eye_like(inner)
  return out, matmul(matmul(u, inner), ut)


def matrix_power_eig(cov: jax.Array, p: float = 0.5, *,
                     eps: float | None = None) -> jax.Array:
  """Matrix power Sigma^p by eigendecomposition (MPN-COV).

      Sigma = U diag(lam) U^T,   S = U diag(max(lam, c)^p) U^T,
      c = max(eps * lam_max, sqrt(tiny)).

  Eigenvalues below c (numerically zero: a float32 `eigh` resolves them only
  to ~1e-7 lam_max) are clamped to c. The derivative is that of this clamped
  function, by the Daleckii-Krein formula

      dS = U (F o (U^T dSigma_sym U)) U^T,

  with F from `power_divided_differences`; it is finite for repeated and zero
  eigenvalues. Implemented as a `custom_jvp`, so reverse mode, forward mode and
  higher derivatives all work.

  Args:
    cov: (..., n, n) symmetric PSD matrices; computed in float32 (or float64).
    p: the power; 0.5 is MPN-COV's square root.
    eps: relative clamp; default 10 x the machine epsilon of the compute dtype
      (1.2e-6 in float32, 2.2e-15 in float64).

  Returns:
    (..., n, n) symmetric matrices.

  References:
    Li et al., "Is Second-order Information Helpful for Large-scale Visual
    Recognition?", ICCV 2017 (MPN-COV). Higham, "Functions of Matrices", 2008,
    Thm. 3.11 (Daleckii-Krein).
  """
  cov = upcast(cov)
  check_square(cov, "matrix_power_eig")
  if eps is None:
    eps = 10.0 * float(jnp.finfo(cov.dtype).eps)
  return _power(cov, float(p), float(eps))
