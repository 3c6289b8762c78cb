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


def linear(features: int, dtype: Dtype, name: str, *,
           kernel_init: Any = trunc_normal, use_bias: bool = True
           ) -> nn.Dense:
  """A transformer's Dense: float32 params, zero bias, `kernel_init`
  (DeiT's trunc-normal(0.02) by default)."""
  return nn.Dense(features, use_bias=use_bias, kernel_init=kernel_init,
                  bias_init=nn.initializers.zeros, dtype=dtype,
                  param_dtype=jnp.float32, name=name)


def layer_norm(dtype: Dtype, name: str, epsilon: float = 1e-6
               ) -> nn.LayerNorm:
  """LayerNorm with float32 params; DeiT's (timm's) epsilon 1e-6 by
  default."""
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32,
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
  """Pre-norm transformer block: x + DropPath(MHSA(LN(x))), then
  x + DropPath(MLP(LN(x))), the MLP D -> int(D * mlp_ratio) -> D with exact
  GELU. DeiT's pieces (qkv with bias, LayerNorm eps 1e-6, trunc-normal
  linears); a subclass swaps them by overriding `attention`, `layer_norm`
  and `linear` (`dropcov_vit.ReferenceBlock`). (B, N, D) -> (B, N, D)."""
  num_heads: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  dtype: Dtype = jnp.float32

  def attention(self, y: jax.Array) -> jax.Array:
    return nn.MultiHeadDotProductAttention(
        self.num_heads, dtype=self.dtype, param_dtype=jnp.float32,
        kernel_init=trunc_normal, bias_init=nn.initializers.zeros,
        name="attn")(y, y)

  def layer_norm(self, name: str) -> nn.Module:
    return layer_norm(self.dtype, name)

  def linear(self, features: int, name: str) -> nn.Module:
    return linear(features, self.dtype, name)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    d = x.shape[-1]
    y = self.attention(self.layer_norm("norm1")(x))
    x = x + DropPath(self.drop_path, name="drop_path1")(y, train)
    y = self.layer_norm("norm2")(x)
    y = self.linear(int(d * self.mlp_ratio), "mlp_fc1")(y)
    y = self.linear(d, "mlp_fc2")(nn.gelu(y, approximate=False))
    return x + DropPath(self.drop_path, name="drop_path2")(y, train)


class TokenBackbone(nn.Module):
  """The part of a transformer backbone after its tokens: `depth` encoder
  blocks with stochastic depth rising linearly to `drop_path_rate`, a final
  LayerNorm and the token head. A subclass declares the fields used here
  (head, image_size, depth, num_heads, mlp_ratio, drop_path_rate, dtype),
  sets `self.blocks = self.encoder_blocks(BlockClass)` and `self.norm` in
  `setup`, and defines `stem(images, train)` -> (B, 1 + N, D) tokens."""

  def encoder_blocks(self, block_cls: type[EncoderBlock]
                     ) -> list[EncoderBlock]:
    """block0 .. block{depth-1}, drop-path rate i / (depth - 1) times
    `drop_path_rate`."""
    rates = [self.drop_path_rate * i / max(self.depth - 1, 1)
             for i in range(self.depth)]
    return [block_cls(self.num_heads, self.mlp_ratio, r, self.dtype,
                      name=f"block{i}") for i, r in enumerate(rates)]

  def check_image_size(self, x: jax.Array) -> None:
    """The position encoding fixes the input size: anything else is an
    error naming the fix."""
    if x.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(
          f"{type(self).__name__} was built for {self.image_size}x"
          f"{self.image_size} images (image_size={self.image_size}), got "
          f"{x.shape[1]}x{x.shape[2]}; resize the input or set image_size.")

  def from_stem(self, tokens: jax.Array, train: bool) -> jax.Array:
    """Tokens -> (B, num_classes) float32 logits."""
    for block in self.blocks:
      tokens = block(tokens, train)
    return self.head(self.norm(tokens), train)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return self.from_stem(self.stem(x, train), train)


class VisionTransformer(TokenBackbone):
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
    self.blocks = self.encoder_blocks(EncoderBlock)
    self.norm = layer_norm(self.dtype, "norm")
    self.num_patches = (self.image_size // self.patch_size) ** 2
    self.pos_embed = self.param("pos_embed", trunc_normal,
                                (1, 1 + self.num_patches, self.embed_dim))

  def stem(self, x: jax.Array, train: bool) -> jax.Array:
    """(B, H, W, 3) -> tokens (B, 1 + HW/p^2, D): patches, class token,
    positions."""
    del train
    self.check_image_size(x)
    p = self.patch_embed(x.astype(self.dtype))
    b = p.shape[0]
    p = p.reshape(b, self.num_patches, self.embed_dim)
    cls = jnp.broadcast_to(self.cls_token, (b, 1, self.embed_dim))
    tokens = jnp.concatenate([cls.astype(p.dtype), p], axis=1)
    tokens = tokens + self.pos_embed.astype(p.dtype)
    self.sow("intermediates", "stem_out", tokens)
    return tokens
