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

`linear_init` chooses how the heads' Linear layers start: "pytorch"
(U(+-1/sqrt(fan_in)) weights and biases, the default) or "timm" (weights
N(0, 0.02), biases 0: DropCov `Transformers/src/transformer.py`
`Vit._init_weights`, which covers its classifier).
"""

import jax
import jax.numpy as jnp
from flax import linen as nn

from gcp_jax import ops
from gcp_jax.model_config import Options
from gcp_jax.models import layers
from gcp_jax.ops.linalg import HIGHEST


LINEAR_INITS = ("pytorch", "timm")


def _dense(features: int, fan_in: int, linear_init: str, *, name: str,
           use_bias: bool = True) -> nn.Dense:
  """A float32 head Linear, initialised as `linear_init` says."""
  if linear_init == "pytorch":
    return layers.dense(features, fan_in, use_bias=use_bias,
                        precision=HIGHEST, name=name)
  if linear_init == "timm":
    return nn.Dense(features, use_bias=use_bias,
                    kernel_init=nn.initializers.normal(0.02),
                    bias_init=nn.initializers.zeros, param_dtype=jnp.float32,
                    precision=HIGHEST, name=name)
  raise ValueError(f"Unknown linear_init {linear_init!r}; use one of "
                   f"{LINEAR_INITS}.")


def _class_logits(tokens: jax.Array, num_classes: int,
                  linear_init: str = "pytorch") -> jax.Array:
  cls = tokens[:, 0].astype(jnp.float32)
  return _dense(num_classes, cls.shape[-1], linear_init, name="fc_cls")(cls)


class ClsHead(nn.Module):
  """Class token -> FC."""
  num_classes: int
  linear_init: str = "pytorch"

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
    return _class_logits(tokens, self.num_classes, self.linear_init)


class TokenGCPHead(nn.Module):
  """Linear reduction D -> d of the patch tokens, a second-order
  representation (`gcp_jax.ops` registry), FC; summed with the class-token FC.
  """
  num_classes: int
  dim: int
  representation: str
  representation_options: Options = ()
  linear_init: str = "pytorch"

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
    rep = ops.get_representation(self.representation)
    patches = tokens[:, 1:].astype(jnp.float32)
    reduced = _dense(self.dim, patches.shape[-1], self.linear_init,
                     use_bias=False, name="reduce")(patches)
    pooled = rep(reduced, **dict(self.representation_options))
    self.sow("intermediates", "pooled", pooled)
    return _class_logits(tokens, self.num_classes, self.linear_init) + _dense(
        self.num_classes, pooled.shape[-1], self.linear_init,
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

  The reference's own choices are options (the DropCov backbone's presets,
  `deit_drop_*`, set all three): `projections=3` gives W_r the reference's
  3Hw outputs, of which only the first 2Hw (Q, then K) are used;
  `centering="scalar"` subtracts one mean over all N x w entries of each
  (sample, head) slice of Q and of K, as the reference's
  `Covariance._remove_mean` (adaptive_avg_pool2d of a 3-D tensor) does,
  instead of a mean per feature; `linear_init="timm"` (module docstring).

  Attributes:
    num_classes: outputs.
    num_heads: H (6 in DropCov's DeiT presets).
    head_dim: w (14 for Tiny, 24 for Small).
    token_rate, element_rate: fixed dropout rates (0.2 and 0.5).
    projections: outputs of W_r in units of Hw (2, or 3 as the reference).
    centering: "feature" (cross_covariance) or "scalar" (the reference).
    linear_init: "pytorch" or "timm".
  """
  num_classes: int
  num_heads: int = 6
  head_dim: int = 24
  token_rate: float = 0.2
  element_rate: float = 0.5
  projections: int = 2
  centering: str = "feature"
  linear_init: str = "pytorch"

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
    if self.projections not in (2, 3):
      raise ValueError(f"projections must be 2 or 3, got {self.projections}.")
    if self.centering not in ("feature", "scalar"):
      raise ValueError(f"Unknown centering {self.centering!r}; use "
                       f"'feature' or 'scalar'.")
    patches = tokens[:, 1:].astype(jnp.float32)
    b, n, d = patches.shape
    h, w, p = self.num_heads, self.head_dim, self.projections
    qk = _dense(p * h * w, d, self.linear_init, use_bias=False,
                name="reduce")(patches)
    qk = qk.reshape(b, n, p, h, w).transpose(2, 0, 3, 1, 4)  # (p, B, H, N, w)
    q, k = qk[0], qk[1]
    if train:
      key_tok, key_el = jax.random.split(self.make_rng("dropout"))
      mask_shape = (b, h, n, 1)
      q = ops.structured_dropout(key_tok, q, self.token_rate, mask_shape)
      k = ops.structured_dropout(key_tok, k, self.token_rate, mask_shape)
    if self.centering == "scalar":
      q = q - jnp.mean(q, axis=(-2, -1), keepdims=True)
      k = k - jnp.mean(k, axis=(-2, -1), keepdims=True)
      cov = jnp.einsum("...nv,...nw->...vw", q, k, precision=HIGHEST) / n
    else:
      cov = ops.cross_covariance(q, k)                     # (B, H, w, w)
    if train:
      cov = ops.structured_dropout(key_el, cov, self.element_rate, cov.shape)
    pooled = cov.reshape(b, h * w * w)
    self.sow("intermediates", "pooled", pooled)
    return _class_logits(tokens, self.num_classes, self.linear_init) + _dense(
        self.num_classes, pooled.shape[-1], self.linear_init,
        name="fc")(pooled)
