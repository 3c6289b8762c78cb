"""Pure-jnp math of global covariance pooling (no Flax, no optax).

  covariance, bilinear,           features -> (B, C, C)       covariance.py
  cross_covariance
  isqrt, newton_schulz            iSQRT-COV square root        newton_schulz.py
  newton_schulz_eigh,             the same Y_N through eigh    spectral_newton_schulz.py
  newton_schulz_gram
  pooled_isqrt                    features -> isqrt, one call  isqrt_pooling.py
  matrix_power_eig                exact power via eigh         eig_power.py
  epn, signed_power               element-wise power norm      elementwise_power.py
  svpn                            singular-value power norm    singular_value_power.py
  compact_bilinear,               features -> CBP (B, D)       compact_bilinear.py
  tensor_sketch
  triu_vec, flatten               matrix -> vector             vectorize.py
  get_representation              name -> full pipeline        representations.py
  cross_entropy,                  classification losses         losses.py
  soft_target_cross_entropy
  channel_attention, adaptive_drop_rate, channel_dropout,
  structured_dropout              DropCov pieces                dropcov.py
  batch_moments, normalize        training-mode BatchNorm      batch_norm.py
  (as `gcp_jax.ops.batch_norm`)

All ops compute in float32 (float64 stays float64) with matmuls at
`Precision.HIGHEST`; see `linalg.py`.
"""

from gcp_jax.ops import batch_norm
from gcp_jax.ops.compact_bilinear import compact_bilinear, tensor_sketch
from gcp_jax.ops.covariance import bilinear, covariance, cross_covariance
from gcp_jax.ops.dropcov import (adaptive_drop_rate, channel_attention,
                                 channel_dropout, structured_dropout)
from gcp_jax.ops.eig_power import matrix_power_eig
from gcp_jax.ops.elementwise_power import epn, signed_power
from gcp_jax.ops.isqrt_pooling import pooled_isqrt
from gcp_jax.ops.losses import cross_entropy, soft_target_cross_entropy
from gcp_jax.ops.newton_schulz import isqrt, newton_schulz
from gcp_jax.ops.representations import (REPRESENTATIONS, Representation,
                                         get_representation)
from gcp_jax.ops.singular_value_power import svpn
from gcp_jax.ops.spectral_newton_schulz import (newton_schulz_eigh,
                                                newton_schulz_gram)
from gcp_jax.ops.vectorize import flatten, triu_vec

__all__ = [
    "REPRESENTATIONS", "Representation", "adaptive_drop_rate", "batch_norm",
    "bilinear",
    "channel_attention", "channel_dropout", "compact_bilinear", "covariance",
    "cross_covariance",
    "cross_entropy",
    "epn",
    "flatten", "get_representation", "isqrt", "matrix_power_eig",
    "newton_schulz", "newton_schulz_eigh", "newton_schulz_gram",
    "pooled_isqrt", "signed_power", "soft_target_cross_entropy",
    "structured_dropout", "svpn", "tensor_sketch",
    "triu_vec",
]
