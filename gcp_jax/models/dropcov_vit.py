"""DropCov's own transformer backbone (the reference `Deit_drop_*` models).

  tokenizer  3x3 conv (3 -> 64, bias) -> 3x3/2 max-pool ->
             3 x [dense block (6 layers, growth 16, bottleneck 32; each
             layer relu -> 1x1 conv -> relu -> 3x3 conv, no BatchNorm) ->
             transition (BatchNorm -> 1x1 conv to 128 -> 2x2/2 avg-pool)]
             -> 1x1 conv (128 -> D, bias): a (H/16) x (W/16) token grid
  stem       prepend class token -> + fixed sinusoid positions
  blocks     `depth` x pre-norm [x + MHSA(LN(x)), x + MLP(LN(x))], qkv
             without bias, GELU, LayerNorm eps 1e-5, stochastic depth rising
             linearly to `drop_path_rate`
  norm       final LayerNorm on all tokens
  head       `gcp_jax.models.token_heads`

After DropCov `Transformers/src/transformer.py` (class `Vit`, presets
`Deit_drop_{Tiny,Small,Base}`), `src/model/visualTokens.py`
(`DenseNetStyleModule`, `baseConvModule`, `DenseTransition`) and
`src/model/vitBlock.py` (`ViTBlock`, `Attention`, `get_sinusoid_encoding`);
the dense blocks are timm 0.4's `DenseBlock` with its default
`norm_layer=nn.ReLU`, i.e. ReLU where DenseNet has BatchNorm + ReLU.

Initialisation as the reference: Linear weights and the class token
N(0, 0.02) (timm's `trunc_normal_(std=.02)` truncates at +-2 absolute,
i.e. at 100 standard deviations), Linear biases 0, LayerNorm 1/0; the
convolutions keep PyTorch's default U(+-1/sqrt(fan_in)) for kernel and
bias, BatchNorm 1/0. The position table is a constant, not a parameter.

As the reference, the last transition pools only when image_size // 112 is
not 1 (so 224 and 112 px both give 14 x 14 tokens); other sizes give
image_size / 16 (or / 8 for 112 <= size < 224) tokens a side.
`method="stem"` / `method="from_stem"` split after the token embedding.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from gcp_jax.models import layers
from gcp_jax.models import vit
from gcp_jax.models.vit import EncoderBlock, TokenBackbone

Dtype = Any
normal_002 = nn.initializers.normal(0.02)


def sinusoid_table(num_positions: int, dim: int) -> np.ndarray:
  """Fixed position table (num_positions, dim), float32.

  angle[p, j] = p / 10000^(2 floor(j / 2) / dim); even j take sin, odd j
  cos (reference `get_sinusoid_encoding`, computed in float64).
  """
  pos = np.arange(num_positions, dtype=np.float64)[:, None]
  j = np.arange(dim)
  angle = pos / np.power(10000.0, 2 * (j // 2) / dim)[None, :]
  table = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
  return table.astype(np.float32)


def _torch_conv(features: int, kernel: int, fan_in: int, use_bias: bool,
                dtype: Dtype, name: str) -> nn.Conv:
  """PyTorch-default Conv2d (stride 1, padding kernel // 2)."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                 use_bias=use_bias, kernel_init=layers.linear_kernel_init,
                 bias_init=layers.linear_bias_init(fan_in), dtype=dtype,
                 param_dtype=jnp.float32, name=name)


def _linear(features: int, dtype: Dtype, name: str,
            use_bias: bool = True) -> nn.Dense:
  """The reference's Linear: N(0, 0.02) kernel, zero bias."""
  return vit.linear(features, dtype, name, kernel_init=normal_002,
                    use_bias=use_bias)


def _layer_norm(dtype: Dtype, name: str) -> nn.LayerNorm:
  """The reference's LayerNorm (PyTorch's epsilon 1e-5)."""
  return vit.layer_norm(dtype, name, epsilon=1e-5)


class DenseTokenizer(nn.Module):
  """(B, H, W, 3) -> (B, N, D) tokens, N = (H/16)(W/16) at 224 px.

  Module names follow the reference's `stage` Sequential: dense block b is
  `stage{2b}_denselayer{i}_conv{1,2}` (i from 1), its transition
  `stage{2b+1}_norm` / `stage{2b+1}_conv`.

  Attributes:
    embed_dim: D.
    last_pool: whether the third transition average-pools (reference:
      image_size // 112 != 1).
    bn_axis_name: mapped axis of synchronised BatchNorm statistics.
    dtype: compute dtype.
  """
  embed_dim: int
  last_pool: bool = True
  stem_width: int = 64
  growth_rate: int = 16
  bottleneck: int = 32
  layers_per_block: int = 6
  transition_width: int = 128
  bn_axis_name: str | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = _torch_conv(self.stem_width, 3, 3 * 9, True, self.dtype, "stem")(x)
    x = layers.max_pool_3x3_s2(x)
    for b in range(3):
      feats = [x]
      for i in range(self.layers_per_block):
        y = nn.relu(jnp.concatenate(feats, axis=-1))
        y = _torch_conv(self.bottleneck, 1, y.shape[-1], False, self.dtype,
                        f"stage{2 * b}_denselayer{i + 1}_conv1")(y)
        y = _torch_conv(self.growth_rate, 3, 9 * self.bottleneck, False,
                        self.dtype,
                        f"stage{2 * b}_denselayer{i + 1}_conv2")(nn.relu(y))
        feats.append(y)
      x = jnp.concatenate(feats, axis=-1)
      x = layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype,
                            name=f"stage{2 * b + 1}_norm")(x)
      x = _torch_conv(self.transition_width, 1, x.shape[-1], False,
                      self.dtype, f"stage{2 * b + 1}_conv")(x)
      if b < 2 or self.last_pool:
        x = nn.avg_pool(x, (2, 2), (2, 2))
    x = _torch_conv(self.embed_dim, 1, self.transition_width, True,
                    self.dtype, "proj")(x)
    return x.reshape(x.shape[0], -1, self.embed_dim)


class Attention(nn.Module):
  """Multi-head self-attention with one bias-free qkv projection (D -> 3D,
  output order (3, heads, head_dim) as the reference) and a biased output
  projection; scale head_dim^-1/2. (B, N, D) -> (B, N, D)."""
  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, n, d = x.shape
    h = self.num_heads
    qkv = _linear(3 * d, self.dtype, "qkv", use_bias=False)(x)
    qkv = qkv.reshape(b, n, 3, h, d // h).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]                       # (B, H, N, d/H)
    logits = jnp.einsum("bhnc,bhmc->bhnm", q, k) * (d // h) ** -0.5
    attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    y = jnp.einsum("bhnm,bhmc->bnhc", attn.astype(v.dtype), v)
    return _linear(d, self.dtype, "proj")(y.reshape(b, n, d))


class ReferenceBlock(EncoderBlock):
  """`vit.EncoderBlock` with the reference's pieces: `Attention` (no qkv
  bias), LayerNorm eps 1e-5, N(0, 0.02) linears."""

  def attention(self, y: jax.Array) -> jax.Array:
    return Attention(self.num_heads, self.dtype, name="attn")(y)

  def layer_norm(self, name: str) -> nn.Module:
    return _layer_norm(self.dtype, name)

  def linear(self, features: int, name: str) -> nn.Module:
    return _linear(features, self.dtype, name)


class DropCovViT(TokenBackbone):
  """DropCov's transformer: conv tokenizer + ViT blocks + token head.

  Attributes:
    head: a token head module.
    image_size: side of the (square) input images.
    embed_dim, depth, num_heads, mlp_ratio: the architecture
      (Deit_drop_Tiny 240, 12, 4, 2.5; Small 384, 12, 6, 4; Base 768, 12,
      12, 4).
    drop_path_rate: stochastic depth of the last block (reference 0.1).
    bn_axis_name: mapped axis of the tokenizer's BatchNorm statistics.
    dtype: compute dtype of the backbone (params float32).
  """
  head: nn.Module
  image_size: int = 224
  embed_dim: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.1
  bn_axis_name: str | None = None
  dtype: Dtype = jnp.float32

  def setup(self):
    last_pool = self.image_size // 112 != 1
    self.tokenizer = DenseTokenizer(self.embed_dim, last_pool,
                                    bn_axis_name=self.bn_axis_name,
                                    dtype=self.dtype)
    self.cls_token = self.param("cls_token", normal_002,
                                (1, 1, self.embed_dim))
    self.blocks = self.encoder_blocks(ReferenceBlock)
    self.norm = _layer_norm(self.dtype, "norm")

  def stem(self, x: jax.Array, train: bool) -> jax.Array:
    """(B, H, W, 3) -> tokens (B, 1 + N, D): tokenizer, class token,
    sinusoid positions."""
    self.check_image_size(x)
    p = self.tokenizer(x.astype(self.dtype), train)
    b, n, d = p.shape
    cls = jnp.broadcast_to(self.cls_token, (b, 1, d))
    tokens = jnp.concatenate([cls.astype(p.dtype), p], axis=1)
    tokens = tokens + jnp.asarray(sinusoid_table(1 + n, d), p.dtype)[None]
    self.sow("intermediates", "stem_out", tokens)
    return tokens
