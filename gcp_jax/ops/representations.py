"""Registry of the second-order representations the GCP papers compare.

A representation = pooling (centred covariance or uncentred bilinear) ->
post-normalisation of the (C, C) matrix -> vectorisation for the classifier.

  name     pooling     normalisation                          vector
  -------  ----------  -------------------------------------  ---------------
  isqrt    covariance  Newton-Schulz square root (iSQRT-COV)  triu, C(C+1)/2
                       (method="eigh": same function via eigh)
  eig      covariance  exact power via eigh (MPN-COV)         triu
  epn      covariance  signed sqrt + l2 of each column        triu
                       (DropCov's ePN)
  svpn     covariance  singular-value power (power iter.;     triu
                       DropCov's svPN; `start`)
  none     covariance  none (plain GCP, as DropCov uses)      triu
  bcnn     bilinear    signed sqrt + l2 of all entries        full, C^2
                       (B-CNN)
  cbp      none: a Tensor Sketch of bilinear pooling, signed   D (8192,
           sqrt + l2 (compact bilinear pooling; `embed`)       `output_dim`)

Synopsis:
  rep = get_representation("isqrt")
  z = rep(feats, num_iters=5)                 # (B, H, W, C) -> (B, C(C+1)/2)
  z = rep(feats, num_iters=5, method="eigh")  # same z, faster on CPUs
  rep.normalize(cov, num_iters=5)             # the (B, C, C) stage alone
  rep.output_dim(256)                         # 32896
  get_representation("cbp").output_dim(256, output_dim=4096)   # 4096
"""

import dataclasses
from typing import Any, Callable

import jax

from gcp_jax.ops.compact_bilinear import compact_bilinear, sketch_output_dim
from gcp_jax.ops.covariance import bilinear, covariance
from gcp_jax.ops.eig_power import matrix_power_eig
from gcp_jax.ops.elementwise_power import epn
from gcp_jax.ops.isqrt_pooling import pooled_isqrt
from gcp_jax.ops.linalg import upcast
from gcp_jax.ops.newton_schulz import isqrt
from gcp_jax.ops.singular_value_power import svpn
from gcp_jax.ops.vectorize import flatten, triu_vec

MatrixFn = Callable[..., jax.Array]


def bcnn_normalize(mat: jax.Array, alpha: float = 0.5) -> jax.Array:
  """B-CNN's normalisation: signed power, then l2 over all entries
  (`epn(..., normalize="frobenius")`)."""
  return epn(mat, alpha, normalize="frobenius")


def identity(mat: jax.Array) -> jax.Array:
  """No post-normalisation (plain covariance); casts to the compute dtype."""
  return upcast(mat)


@dataclasses.dataclass(frozen=True)
class Representation:
  """One second-order representation; call it on features.

  Attributes:
    name: registry key.
    pool: features (B, H, W, C) | (B, N, C) -> (B, C, C).
    normalize: (B, C, C) -> (B, C, C); takes the representation's options as
      keyword arguments.
    vectorize: (B, C, C) -> (B, D).
    pool_normalize: optional features -> normalised (B, C, C) in one call,
      equal to normalize(pool(features)) but free to skip the (C, C) pooled
      matrix (isqrt with method="eigh"); used by `__call__` when given.
    takes_num_iters: the normalisation's `num_iters` is the model config's
      `num_iters` (the Newton-Schulz steps of isqrt).
    embed: for a representation that forms no (C, C) matrix (cbp): features
      -> (B, D) in one call, with the options; `pool`, `normalize` and
      `vectorize` are then None.
    embed_dim: with `embed`: D from C and the options.
  """
  name: str
  pool: MatrixFn | None
  normalize: MatrixFn | None
  vectorize: MatrixFn | None
  pool_normalize: MatrixFn | None = None
  takes_num_iters: bool = False
  embed: MatrixFn | None = None
  embed_dim: Callable[..., int] | None = None

  def __call__(self, features: jax.Array, **options: Any) -> jax.Array:
    """(B, H, W, C) or (B, N, C) -> (B, D)."""
    if self.embed is not None:
      return self.embed(features, **options)
    if self.pool_normalize is not None:
      return self.vectorize(self.pool_normalize(features, **options))
    return self.vectorize(self.normalize(self.pool(features), **options))

  def output_dim(self, channels: int, **options: Any) -> int:
    """D for C = `channels` (and, for an `embed`, its options):
    C(C+1)/2 (triu), C^2 (full) or `embed_dim(channels, **options)`."""
    if self.embed_dim is not None:
      return self.embed_dim(channels, **options)
    if self.vectorize is triu_vec:
      return channels * (channels + 1) // 2
    return channels * channels


REPRESENTATIONS: dict[str, Representation] = {
    r.name: r for r in (
        Representation("isqrt", covariance, isqrt, triu_vec, pooled_isqrt,
                       takes_num_iters=True),
        Representation("eig", covariance, matrix_power_eig, triu_vec),
        Representation("epn", covariance, epn, triu_vec),
        Representation("svpn", covariance, svpn, triu_vec),
        Representation("none", covariance, identity, triu_vec),
        Representation("bcnn", bilinear, bcnn_normalize, flatten),
        Representation("cbp", None, None, None,
                       embed=compact_bilinear, embed_dim=sketch_output_dim),
    )
}


def get_representation(name: str) -> Representation:
  """Looks up a representation by name; unknown names list the valid ones."""
  try:
    return REPRESENTATIONS[name]
  except KeyError:
    raise ValueError(
        f"Unknown representation {name!r}; valid names are: "
        f"{', '.join(sorted(REPRESENTATIONS))}.") from None
