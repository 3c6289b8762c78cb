"""Second-order pooling of local features: covariance and bilinear pooling.

Synopsis:
  feats = jnp.ones((8, 14, 14, 256))        # NHWC conv map, or (B, N, C) tokens
  cov = covariance(feats)                   # (8, 256, 256), float32
  bil = bilinear(feats)                     # uncentred, for B-CNN
"""

import jax
import jax.numpy as jnp

from gcp_jax.ops.linalg import HIGHEST, upcast


def as_positions(x: jax.Array, name: str) -> jax.Array:
  """(B, H, W, C) or (B, N, C) -> (B, M, C) in the compute dtype."""
  x = upcast(x)
  if x.ndim == 4:
    b, h, w, c = x.shape
    return x.reshape(b, h * w, c)
  if x.ndim == 3:
    return x
  raise ValueError(
      f"{name} expects features of shape (B, H, W, C) (conv maps, NHWC) or "
      f"(B, N, C) (tokens), got shape {tuple(x.shape)}.")


def centred_positions(x: jax.Array, name: str) -> jax.Array:
  """X - mu 1^T of each sample: features -> (B, M, C) in the compute dtype."""
  x = as_positions(x, name)
  return x - jnp.mean(x, axis=1, keepdims=True)


def covariance(x: jax.Array) -> jax.Array:
  """Centred covariance of the local features of each sample (iSQRT-COV eq. 1).

  With X in R^{C x M} the M local features of one sample and Ibar the centring
  matrix (1/M)(I - (1/M) 1 1^T),

      Sigma = X Ibar X^T = (1/M) (X - mu 1^T)(X - mu 1^T)^T,  mu = (1/M) X 1.

  Biased (1/M) normalisation and no shrinkage, as in all reference code
  (docs/method.md §2.1). The M x M matrix Ibar is never formed: the spatial
  mean is subtracted instead, so memory is O(B M C) rather than O(B M^2).

  Args:
    x: (B, H, W, C) conv features (M = H W) or (B, N, C) tokens (M = N), any
      float dtype.

  Returns:
    (B, C, C) symmetric PSD matrices in float32 (float64 if x is float64).

  References:
    Li et al., "Towards Faster Training of Global Covariance Pooling Networks
    by Iterative Matrix Square Root Normalization", CVPR 2018.
  """
  xc = centred_positions(x, "covariance")
  return jnp.einsum("bmc,bmd->bcd", xc, xc, precision=HIGHEST) / xc.shape[1]


def bilinear(x: jax.Array) -> jax.Array:
  """Uncentred bilinear pooling P = (1/M) X X^T (B-CNN, docs/method.md §2.2).

  Args:
    x: (B, H, W, C) or (B, N, C) features.

  Returns:
    (B, C, C) in float32 (float64 if x is float64).

  References:
    Lin et al., "Bilinear CNN Models for Fine-grained Visual Recognition",
    ICCV 2015.
  """
  x = as_positions(x, "bilinear")
  return jnp.einsum("bmc,bmd->bcd", x, x, precision=HIGHEST) / x.shape[1]


def cross_covariance(q: jax.Array, k: jax.Array) -> jax.Array:
  """Centred cross-covariance of two feature sets over the same positions.

      C = (1/N) (Q - 1 mu_q^T)^T (K - 1 mu_k^T),   Q, K in R^{N x w}

  Each feature is centred by its own mean over the N positions. (DropCov's
  transformer code subtracts one scalar per slice instead: docs/method.md
  §11, item 7, and docs/design.md, 'Transformer DropCov'; gcp-jax computes
  the covariance the method describes.)

  Args:
    q: (..., N, w) features.
    k: (..., N, w') features at the same N positions.

  Returns:
    (..., w, w') in float32 (float64 if the inputs are).
  """
  q, k = upcast(q), upcast(k)
  qc = q - jnp.mean(q, axis=-2, keepdims=True)
  kc = k - jnp.mean(k, axis=-2, keepdims=True)
  return jnp.einsum("...nv,...nw->...vw", qc, kc,
                    precision=HIGHEST) / q.shape[-2]
