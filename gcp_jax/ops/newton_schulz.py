"""iSQRT-COV: matrix square root by coupled Newton-Schulz iteration.

Reproduces the `Sqrtm` function of the reference code (fast-MPN-COV
`src/representation/MPNCOV.py`, docs/method.md §3.1) exactly: the network is
trained with this fixed-iteration approximation, not with the exact root.

Gradients come from reverse-mode autodiff through the `lax.fori_loop` (static
trip count, so it lowers to a `scan`). Measured against a `custom_vjp` that
implements the hand-written backward of the reference (docs/method.md §3.2),
autodiff is as fast or faster (`benchmarks/RESULTS.md`), exact end-to-end
(tests check it against finite differences) and keeps forward-mode and
higher-order derivatives (Hessian-vector products) working, which a
`custom_vjp` would forbid.

Synopsis:
  cov = covariance(feats)                   # (B, C, C)
  root = isqrt(cov, num_iters=5)            # (B, C, C), ~ cov^(1/2)
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from gcp_jax.ops.linalg import (batch_trace, check_square, eye_like, matmul,
                                upcast)
from gcp_jax.ops.spectral_newton_schulz import newton_schulz_eigh

# Traces at or below this are clamped (see `trace_normalize`). It sits far
# below the trace of any real covariance (a 1e-8-scaled feature map with 256
# channels still has a trace of ~1e-14), so the reference function is
# reproduced exactly above it, while 1 / floor stays representable in float32.
DEFAULT_TRACE_FLOOR = 1e-20

# How Y_N is evaluated: the matrix iteration, or the same polynomial on the
# eigenvalues (`spectral_newton_schulz.py`; faster on CPUs).
METHODS = ("newton_schulz", "eigh")


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def trace_normalize(cov: jax.Array, floor: float) -> tuple[jax.Array,
                                                            jax.Array]:
  """Pre-normalisation by the trace: A = Sigma / t, with t = tr(Sigma).

  The trace is clamped, t_c = max(t, floor), so an all-zero matrix (trace 0,
  e.g. a dead reduction block or DropCov with rate 1) gives A = 0 instead of
  0/0 = NaN. The reference code has no guard.

  The JVP is written by hand so that no 1/t^2 or t^(-3/2) intermediate can
  overflow for small traces:  dA = (dSigma - A dt) / t_c,
  d sqrt(t_c) = dt / (2 sqrt(t_c)),  dt = tr(dSigma) [t > floor].
  It is the exact derivative of the clamped function.

  Args:
    cov: (..., n, n) matrices.
    floor: clamp value for the trace.

  Returns:
    (A, sqrt(t_c)) with shapes (..., n, n) and (...).
  """
  t = jnp.maximum(batch_trace(cov), floor)
  return cov / t[..., None, None], jnp.sqrt(t)


@trace_normalize.defjvp
def _trace_normalize_jvp(floor, primals, tangents):
  (cov,), (dcov,) = primals, tangents
  t_raw = batch_trace(cov)
  t = jnp.maximum(t_raw, floor)
  a, sqrt_t = cov / t[..., None, None], jnp.sqrt(t)
  dt = jnp.where(t_raw > floor, batch_trace(dcov), 0.0)
  da = (dcov - a * dt[..., None, None]) / t[..., None, None]
  return (a, sqrt_t), (da, dt / (2.0 * sqrt_t))


def newton_schulz(a: jax.Array, num_iters: int) -> jax.Array:
  """Coupled Newton-Schulz iteration Y_N ~ A^(1/2) (docs/method.md §3.1,
  step 2).

  With Y_0 = A, Z_0 = I and, for k = 1..N,

      T_k = (3I - Z_{k-1} Y_{k-1}) / 2,  Y_k = Y_{k-1} T_k,  Z_k = T_k Z_{k-1},

  exactly as the reference computes it: k = 1 uses Y_0 = A, Z_0 = I in closed
  form (Y_1 = A(3I - A)/2, Z_1 = (3I - A)/2), k = 2..N-1 run in a
  `lax.fori_loop` (unrolled), and the last step forms Y_N only. N = 1 returns Y_1.

  Converges to A^(1/2) when the eigenvalues of A lie in [0, 1] (ensured by
  the trace pre-normalisation); with N = 5 it is an approximation.

  Args:
    a: (..., n, n) symmetric PSD matrices with trace <= 1.
    num_iters: N >= 1, a Python int (static trip count).

  Returns:
    (..., n, n) Y_N.
  """
  i3 = 3.0 * eye_like(a)
  if num_iters == 1:
    return 0.5 * matmul(a, i3 - a)
  t = 0.5 * (i3 - a)
  y, z = matmul(a, t), t

  def step(_, yz):
    y, z = yz
    t = 0.5 * (i3 - matmul(z, y))
    return matmul(y, t), matmul(t, z)

  # Fully unrolled (the trip count is static): the rolled loop's stacked
  # residual buffers cost ~5% of the head's time on CPU
  # (benchmarks/RESULTS.md).
  y, z = lax.fori_loop(0, num_iters - 2, step, (y, z), unroll=True)
  return 0.5 * matmul(y, i3 - matmul(z, y))


def check_isqrt_options(num_iters: int, method: str, name: str) -> None:
  """Raises ValueError for a bad N or evaluation method."""
  if not isinstance(num_iters, int) or isinstance(num_iters, bool) or (
      num_iters < 1):
    raise ValueError(
        f"{name}: num_iters must be a Python int >= 1, got {num_iters!r}.")
  if method not in METHODS:
    raise ValueError(
        f"{name}: unknown method {method!r}; valid methods are: "
        f"{', '.join(METHODS)}.")


def isqrt(cov: jax.Array, num_iters: int = 5, *, method: str = "newton_schulz",
          trace_floor: float = DEFAULT_TRACE_FLOOR) -> jax.Array:
  """iSQRT-COV matrix square root S ~ Sigma^(1/2) (iSQRT-COV eqs. 4-7).

      A = Sigma / tr(Sigma)                       (pre-normalisation)
      Y_N = NewtonSchulz_N(A)                     (`newton_schulz`)
      S = sqrt(tr(Sigma)) Y_N                     (post-compensation)

  N = 5 is what every published GCP network uses (the fast-MPN-COV module
  default of 3 is not). The result is the same function as the reference up to
  float32 rounding; for traces <= `trace_floor` it stays finite (0 for the
  zero matrix) where the reference returns NaN.

  `method="eigh"` evaluates the same Y_N as U diag(p_N(lam)) U^T
  (`newton_schulz_eigh`): one eigendecomposition instead of 3N - 3 matrix
  products, exact first derivatives in both modes (second derivatives only
  at distinct eigenvalues, see `spectral_newton_schulz.py`). Faster on
  CPUs; on GPUs keep the default.

  Args:
    cov: (..., n, n) symmetric PSD matrices, e.g. from `covariance`; any
      float dtype, computed in float32 (float64 stays float64).
    num_iters: number of Newton-Schulz iterations N >= 1.
    method: "newton_schulz" (the matrix iteration) or "eigh" (see above).
    trace_floor: traces are clamped to at least this value.

  Returns:
    (..., n, n) matrices in the compute dtype.

  References:
    Li et al., "Towards Faster Training of Global Covariance Pooling Networks
    by Iterative Matrix Square Root Normalization", CVPR 2018.
  """
  check_isqrt_options(num_iters, method, "isqrt")
  cov = upcast(cov)
  check_square(cov, "isqrt")
  a, sqrt_t = trace_normalize(cov, trace_floor)
  evaluate = newton_schulz if method == "newton_schulz" else newton_schulz_eigh
  return evaluate(a, num_iters) * sqrt_t[..., None, None]
