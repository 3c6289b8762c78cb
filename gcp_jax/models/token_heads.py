"""Heads on the token sequence of a ViT: (B, 1 + N, D) -> (B, num_classes).

  ClsHead            FC on the class token (DeiT)
  TokenGCPHead       class-token FC + FC(representation(reduce(patch tokens)))
  TokenDropCovHead   class-token FC + FC(element_dropout(cross_cov(
                       token_dropout(q), token_dropout(k))))
                                                   (docs/method.md §6.2)

The second-order heads use the N patch tokens only and add their logits to
the class-token logits ("sum_fc" fusion). They compute in float32 with
HIGHEST-precision matmuls. Dropout masks use the 'dropout' RNG stream and are
active in training only.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn

from gcp_jax import ops
from gcp_jax.model_config import Options
from gcp_jax.models import layers
from gcp_jax.ops.linalg import HIGHEST


def _class_logits(tokens: jax.Array, num_classes: int) -> jax.Array:
  cls = tokens[:, 0].astype(jnp.float32)
  return layers.dense(num_classes, cls.shape[-1], precision=HIGHEST,
                      name="fc_cls")(cls)


class ClsHead(nn.Module):
  """Class token -> FC."""
  num_classes: int

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
    return _class_logits(tokens, self.num_classes)


class TokenGCPHead(nn.Module):
  """Linear reduction D -> d of the patch tokens, a second-order
  representation (`gcp_jax.ops` registry), FC; summed with the class-token FC.
  """
  num_classes: int
  dim: int
  representation: str
  representation_options: Options = ()

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
    rep = ops.get_representation(self.representation)
    patches = tokens[:, 1:].astype(jnp.float32)
    reduced = layers.dense(self.dim, patches.shape[-1], use_bias=False,
                           precision=HIGHEST, name="reduce")(patches)
    pooled = rep(reduced, **dict(self.representation_options))
    self.sow("intermediates", "pooled", pooled)
    return _class_logits(tokens, self.num_classes) + layers.dense(
        self.num_classes, pooled.shape[-1], precision=HIGHEST,
        name="fc")(pooled)


class TokenDropCovHead(nn.Module):
  """Transformer DropCov: per-head cross-covariance of two projections of the
  patch tokens with token dropout before and element dropout after.

  W_r: D -> 2 H w (no bias) gives Q, K in R^{N x w} per head h. In training
  each (sample, head, token) row of Q and K is dropped with the same mask
  (rate `token_rate`, scaled by 1 / (1 - rate)): the intended token-wise
  behaviour, not the PyTorch-version-dependent `Dropout2d` on 3-D input
  (docs/design.md, 'Transformer DropCov'). C_h = cross_covariance(Q, K)
  (w x w, all entries kept), entries dropped with rate `element_rate`,
  flattened to H w^2, FC.

  Attributes:
    num_classes: outputs.
    num_heads: H (6 in DropCov's DeiT presets).
    head_dim: w (14 for Tiny, 24 for Small).
    token_rate, element_rate: fixed dropout rates (0.2 and 0.5).
  """
  num_classes: int
  num_heads: int = 6
  head_dim: int = 24
  token_rate: float = 0.2
  element_rate: float = 0.5

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
    patches = tokens[:, 1:].astype(jnp.float32)
    b, n, d = patches.shape
    h, w = self.num_heads, self.head_dim
    qk = layers.dense(2 * h * w, d, use_bias=False, precision=HIGHEST,
                      name="reduce")(patches)
    qk = qk.reshape(b, n, 2, h, w).transpose(2, 0, 3, 1, 4)  # (2, B, H, N, w)
    q, k = qk[0], qk[1]
    if train:
      key_tok, key_el = jax.random.split(self.make_rng("dropout"))
      mask_shape = (b, h, n, 1)
      q = ops.structured_dropout(key_tok, q, self.token_rate, mask_shape)
      k = ops.structured_dropout(key_tok, k, self.token_rate, mask_shape)
    cov = ops.cross_covariance(q, k)                       # (B, H, w, w)
    if train:
      cov = ops.structured_dropout(key_el, cov, self.element_rate, cov.shape)
    pooled = cov.reshape(b, h * w * w)
    self.sow("intermediates", "pooled", pooled)
    return _class_logits(tokens, self.num_classes) + layers.dense(
        self.num_classes, pooled.shape[-1], precision=HIGHEST,
        name="fc")(pooled)
