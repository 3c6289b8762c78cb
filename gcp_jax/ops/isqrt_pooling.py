"""iSQRT-COV from features in one call: covariance -> isqrt.

Equal to `isqrt(covariance(x), ...)`. With `method="eigh"` and fewer positions
than channels (M < C: 196 positions and 256 channels at 224 px), the C x C
covariance is never formed: with Xc the centred features and t = tr(Sigma)
= ||Xc||_F^2 / M,

    X^ = Xc / sqrt(M t),   A = Sigma / t = X^T X^,
    isqrt = sqrt(t) Y_N(X^T X^) = sqrt(t) newton_schulz_gram(X^, N),

which eigendecomposes the M x M matrix X^ X^T instead of the C x C one
(`spectral_newton_schulz.py`, eq. (2)).

Synopsis:
  root = pooled_isqrt(feats, 5, method="eigh")    # (B, H, W, C) -> (B, C, C)
"""

import jax
import jax.numpy as jnp

from gcp_jax.ops.covariance import (as_positions, centred_positions,
                                     covariance)
from gcp_jax.ops.newton_schulz import (DEFAULT_TRACE_FLOOR, check_isqrt_options,
                                       isqrt)
from gcp_jax.ops.spectral_newton_schulz import newton_schulz_gram


def pooled_isqrt(x: jax.Array, num_iters: int = 5, *,
                 method: str = "newton_schulz",
                 trace_floor: float = DEFAULT_TRACE_FLOOR) -> jax.Array:
  """isqrt(covariance(x)), through the Gram matrix when that is smaller.

  Args:
    x: (B, H, W, C) conv features (M = H W) or (B, N, C) tokens (M = N), any
      float dtype; computed in float32 (float64 stays float64).
    num_iters: Newton-Schulz iterations N >= 1.
    method: "newton_schulz" (the matrix iteration on the covariance) or
      "eigh" (the same function on eigenvalues: of the M x M Gram matrix when
      M < C, else of the C x C covariance).
    trace_floor: traces are clamped to at least this value, as in `isqrt`.

  Returns:
    (B, C, C) symmetric matrices.
  """
  check_isqrt_options(num_iters, method, "pooled_isqrt")
  m, c = as_positions(x, "pooled_isqrt").shape[-2:]
  if method == "newton_schulz" or m >= c:
    return isqrt(covariance(x), num_iters, method=method,
                 trace_floor=trace_floor)
  xc = centred_positions(x, "pooled_isqrt")
  t = jnp.maximum(jnp.sum(xc * xc, axis=(-2, -1)) / m, trace_floor)
  xn = xc / jnp.sqrt(m * t)[..., None, None]
  return newton_schulz_gram(xn, num_iters) * jnp.sqrt(t)[..., None, None]
