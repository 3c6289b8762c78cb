"""Element-wise power normalisation (ePN), as used by B-CNN.

Synopsis:
  z = epn(cov)                  # sign(S) (|S| + 1e-8)^(1/2), Frobenius-normalised
"""

import jax
import jax.numpy as jnp

from gcp_jax.ops.linalg import safe_norm, upcast

# Added under the power, as in the reference B-CNN / ePN code, so that the
# derivative stays finite at 0.
SIGNED_POWER_EPS = 1e-8


def signed_power(x: jax.Array, alpha: float = 0.5,
                 eps: float = SIGNED_POWER_EPS) -> jax.Array:
  """z = sign(x) (|x| + eps)^alpha, element-wise (signed square root for 0.5)."""
  x = upcast(x)
  return jnp.sign(x) * (jnp.abs(x) + eps) ** alpha


def frobenius_normalize(mat: jax.Array) -> jax.Array:
  """Divides each (..., n, m) matrix by its Frobenius norm (finite at 0)."""
  return mat / safe_norm(mat, axis=(-2, -1), keepdims=True)


def epn(mat: jax.Array, alpha: float = 0.5) -> jax.Array:
  """Element-wise power normalisation followed by l2 normalisation.

      Z = sign(S) o (|S| + 1e-8)^alpha,   Z <- Z / ||Z||_F.

  The l2 normalisation is over all n^2 entries, i.e. the l2 norm of the
  flattened vector as in B-CNN. (DropCov's unused transformer `ePN` normalises
  each column instead; that quirk is not reproduced.)

  Args:
    mat: (..., n, n) covariance or bilinear matrices.
    alpha: the element-wise exponent.

  Returns:
    (..., n, n) in the compute dtype.

  References:
    Lin et al., "Bilinear CNN Models for Fine-grained Visual Recognition",
    ICCV 2015; Li et al., MPN-COV, ICCV 2017 (E-PN baseline).
  """
  return frobenius_normalize(signed_power(mat, alpha))
