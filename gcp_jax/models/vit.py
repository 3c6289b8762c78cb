"""DeiT-style Vision Transformer with an exchangeable token head.

  stem    16x16/16 patch conv -> prepend class token -> + learned positions
  blocks  `depth` x pre-norm [x + MHSA(LN(x)), x + MLP(LN(x))], GELU,
          stochastic depth rising linearly to `drop_path_rate`
  norm    final LayerNorm on all tokens
  head    `gcp_jax.models.token_heads` (class token, GCP, DropCov)

Initialisation follows DeiT/timm: Linear weights and the class/position
embeddings truncated-normal(0.02), biases 0, LayerNorm 1/0 (eps 1e-6).
`method="stem"` / `method="from_stem"` split after the token embedding.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from gcp_jax import ops
from gcp_jax.models import layers

Dtype = Any
trunc_normal = nn.initializers.truncated_normal(0.02)


def _linear(features: int, dtype: Dtype, name: str) -> nn.Dense:
  return nn.Dense(features, kernel_init=trunc_normal,
                  bias_init=nn.initializers.zeros, dtype=dtype,
                  param_dtype=jnp.float32, name=name)


def _layer_norm(dtype: Dtype, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=1e-6, dtype=dtype, param_dtype=jnp.float32,
                      name=name)


class DropPath(nn.Module):
  """Stochastic depth: drops the residual branch per sample in training."""
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if not train or self.rate == 0.0:
      return x
    return ops.structured_dropout(self.make_rng("dropout"), x, self.rate,
                                  (x.shape[0],) + (1,) * (x.ndim - 1))


class EncoderBlock(nn.Module):
  """Pre-norm transformer block (qkv with bias, 4x GELU MLP)."""
  num_heads: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    d = x.shape[-1]
    y = _layer_norm(self.dtype, "norm1")(x)
    y = nn.MultiHeadDotProductAttention(
        self.num_heads, dtype=self.dtype, param_dtype=jnp.float32,
        kernel_init=trunc_normal, bias_init=nn.initializers.zeros,
        name="attn")(y, y)
    x = x + DropPath(self.drop_path, name="drop_path1")(y, train)
    y = _layer_norm(self.dtype, "norm2")(x)
    y = _linear(int(d * self.mlp_ratio), self.dtype, "mlp_fc1")(y)
    y = _linear(d, self.dtype, "mlp_fc2")(nn.gelu(y, approximate=False))
    return x + DropPath(self.drop_path, name="drop_path2")(y, train)


class VisionTransformer(nn.Module):
  """DeiT backbone + token head.

  Attributes:
    head: a token head module.
    image_size: side of the (square) input images; fixes the number of
      position embeddings, 1 + (image_size / patch_size)^2.
    patch_size, embed_dim, depth, num_heads, mlp_ratio: the architecture
      (DeiT-Tiny: 16, 192, 12, 3, 4; DeiT-Small: 16, 384, 12, 6, 4).
    drop_path_rate: stochastic depth of the last block.
    dtype: compute dtype of the backbone (params float32).
  """
  head: nn.Module
  image_size: int = 224
  patch_size: int = 16
  embed_dim: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.1
  dtype: Dtype = jnp.float32

  def setup(self):
    fan_in = 3 * self.patch_size ** 2
    self.patch_embed = nn.Conv(
        self.embed_dim, (self.patch_size, self.patch_size),
        (self.patch_size, self.patch_size), padding="VALID",
        kernel_init=layers.linear_kernel_init,
        bias_init=layers.linear_bias_init(fan_in), dtype=self.dtype,
        param_dtype=jnp.float32)
    self.cls_token = self.param("cls_token", trunc_normal,
                                (1, 1, self.embed_dim))
    rates = [self.drop_path_rate * i / max(self.depth - 1, 1)
             for i in range(self.depth)]
    self.blocks = [EncoderBlock(self.num_heads, self.mlp_ratio, r, self.dtype,
                                name=f"block{i}")
                   for i, r in enumerate(rates)]
    self.norm = _layer_norm(self.dtype, "norm")
    self.num_patches = (self.image_size // self.patch_size) ** 2
    self.pos_embed = self.param("pos_embed", trunc_normal,
                                (1, 1 + self.num_patches, self.embed_dim))

  def stem(self, x: jax.Array, train: bool) -> jax.Array:
    """(B, H, W, 3) -> tokens (B, 1 + HW/p^2, D): patches, class token,
    positions."""
    del train
    if x.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(
          f"VisionTransformer was built for {self.image_size}x"
          f"{self.image_size} images (image_size={self.image_size}), got "
          f"{x.shape[1]}x{x.shape[2]}; resize the input or set image_size.")
    p = self.patch_embed(x.astype(self.dtype))
    b = p.shape[0]
    p = p.reshape(b, self.num_patches, self.embed_dim)
    cls = jnp.broadcast_to(self.cls_token, (b, 1, self.embed_dim))
    tokens = jnp.concatenate([cls.astype(p.dtype), p], axis=1)
    tokens = tokens + self.pos_embed.astype(p.dtype)
    self.sow("intermediates", "stem_out", tokens)
    return tokens

  def from_stem(self, tokens: jax.Array, train: bool) -> jax.Array:
    """Tokens -> (B, num_classes) float32 logits."""
    for block in self.blocks:
      tokens = block(tokens, train)
    return self.head(self.norm(tokens), train)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return self.from_stem(self.stem(x, train), train)
