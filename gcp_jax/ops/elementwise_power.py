"""Element-wise power normalisation (ePN), and B-CNN's variant of it.

Synopsis:
  z = epn(cov)                  # sign(S) sqrt(|S| + 1e-8), columns l2-normalised
  z = epn(bil, normalize="frobenius")   # B-CNN: the whole matrix l2-normalised
"""

import jax
import jax.numpy as jnp

from gcp_jax.ops.linalg import safe_norm, upcast

# Added under the power, as in the reference B-CNN / ePN code, so that the
# derivative stays finite at 0.
SIGNED_POWER_EPS = 1e-8
# Axes of the l2 normalisation of an (..., n, m) matrix.
NORMALIZE_AXES = {"columns": -2, "frobenius": (-2, -1)}


def signed_power(x: jax.Array, alpha: float = 0.5,
                 eps: float = SIGNED_POWER_EPS) -> jax.Array:
  """z = sign(x) (|x| + eps)^alpha, element-wise (signed square root for 0.5)."""
  x = upcast(x)
  return jnp.sign(x) * (jnp.abs(x) + eps) ** alpha


def epn(mat: jax.Array, alpha: float = 0.5,
        normalize: str = "columns") -> jax.Array:
  """Element-wise power normalisation followed by l2 normalisation.

      Z = sign(S) o (|S| + 1e-8)^alpha,
      columns:    Z[:, j] <- Z[:, j] / ||Z[:, j]||   (each column, over i)
      frobenius:  Z <- Z / ||Z||_F                   (all n m entries)

  "columns" is DropCov's transformer `ePN` (`F.normalize(x, dim=1)` on a
  (B, n, m) matrix), the reference of the `epn` representation. "frobenius"
  is B-CNN's l2 normalisation of the flattened vector (fast-MPN-COV's
  `BCNN`), used by the `bcnn` representation. Norms are finite at 0.

  Args:
    mat: (..., n, m) covariance or bilinear matrices.
    alpha: the element-wise exponent.
    normalize: "columns" or "frobenius".

  Returns:
    (..., n, m) in the compute dtype.

  References:
    Lin et al., "Bilinear CNN Models for Fine-grained Visual Recognition",
    ICCV 2015; Wang et al., DropCov, NeurIPS 2022.
  """
  if normalize not in NORMALIZE_AXES:
    raise ValueError(f"epn: normalize must be one of "
                     f"{sorted(NORMALIZE_AXES)}, got {normalize!r}.")
  z = signed_power(mat, alpha)
  return z / safe_norm(z, axis=NORMALIZE_AXES[normalize], keepdims=True)
