"""SE-ResNet-50 of the TPAMI seed (MindSpore `src/resnet.py`, `se_resnet50`),
whose last stage feeds an exchangeable head.

  stem    conv 3x3/2 (32) -> BN -> ReLU -> conv 3x3 (32) -> BN -> ReLU ->
          conv 3x3 (width) -> BN -> ReLU -> max-pool 3x3/2
  layer1  Bottlenecks, 4 x width channels, stride 1
  layer2  8 x width, stride 2;  layer3  16 x width, stride 2
  layer4  32 x width, stride `last_stride` (1 for GCP heads, as the seed)
  head    GAP / GCP / DropCov (`gcp_jax.models.heads`)

A Bottleneck is 1x1 -> 3x3 -> 1x1 (x4) as in `resnet.Bottleneck`, except
where it halves the map: there the 3x3 conv runs at stride 1 and a 2x2/2
max-pool follows it, and the shortcut is a 2x2/2 max-pool, then the 1x1
conv and BN (at stride 1). The last Bottleneck of layer3 and of layer4
rescales its output channels by squeeze-and-excitation (Hu et al. CVPR
2018): s = sigmoid(W_2 relu(W_1 mean_{H,W}(y) + b_1) + b_2), y <- s y, with
W_1: C -> C/4 and W_2: C/4 -> C (`se_dense_0`, `se_dense_1`). docs/method.md
§7.1.

MindSpore pads its convolutions and max-pools 'same' (`padding="same"`, the
default here; docs/design.md, 'Padding'). The fields, `stem` / `from_stem`
and the intermediates sown follow `resnet.ResNet` (docs/extending.md).
Parameter paths: `stem/conv1_{0,1,2}`, `stem/bn1_{0,1,2}`,
`layer{i}/block{j}/conv{k}`, `.../bn{k}`, `.../se/se_dense_{0,1}`,
`.../downsample_conv`, `.../downsample_bn`, `head/...`.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from gcp_jax.models import layers
from gcp_jax.models.split import StemSplit

Dtype = Any
SE_REDUCTION = 4


def _max_pool_2x2(x: jax.Array) -> jax.Array:
  """2 x 2 max-pool at stride 2, MindSpore 'same' (the odd pixel after)."""
  return nn.max_pool(x, (2, 2), (2, 2), padding="SAME")


class SqueezeExcite(nn.Module):
  """(B, H, W, C) -> the same, channels rescaled by a gate in (0, 1)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    s = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    s = nn.relu(layers.dense(channels // SE_REDUCTION, channels,
                             name="se_dense_0")(s))
    s = nn.sigmoid(layers.dense(channels, channels // SE_REDUCTION,
                                name="se_dense_1")(s))
    return (x * s[:, None, None, :]).astype(self.dtype)


class SEBottleneck(nn.Module):
  """The seed's SE-ResNet Bottleneck (module docstring)."""
  features: int
  stride: int = 1
  squeeze_excite: bool = False
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None
  padding: str = "same"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    def bn(name):
      return layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype,
                               name=name)
    out = self.features * 4
    y = layers.conv(self.features, 1, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(bn("bn1")(y))
    y = layers.conv(self.features, 3, dtype=self.dtype, name="conv2",
                    padding=self.padding)(y)
    y = nn.relu(bn("bn2")(y))
    if self.stride != 1:
      y = _max_pool_2x2(y)
    y = layers.conv(out, 1, dtype=self.dtype, name="conv3")(y)
    y = bn("bn3")(y)
    if self.squeeze_excite:
      y = SqueezeExcite(self.dtype, name="se")(y)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != out:
      if self.stride != 1:
        shortcut = _max_pool_2x2(shortcut)
      shortcut = layers.conv(out, 1, dtype=self.dtype,
                             name="downsample_conv")(shortcut)
      shortcut = bn("downsample_bn")(shortcut)
    return nn.relu(y + shortcut)


class SEStage(nn.Module):
  """`num_blocks` SEBottlenecks; the first carries the stride, the last
  squeezes and excites if `squeeze_excite_last`."""
  num_blocks: int
  features: int
  stride: int
  squeeze_excite_last: bool
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None
  padding: str = "same"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(self.num_blocks):
      x = SEBottleneck(
          self.features, self.stride if i == 0 else 1,
          self.squeeze_excite_last and i == self.num_blocks - 1, self.dtype,
          self.bn_axis_name, self.padding, name=f"block{i}")(x, train)
    return x


class SEResNetStem(nn.Module):
  """Three 3x3 convs (the first at stride 2), then a 3x3/2 max-pool."""
  width: int = 64
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None
  padding: str = "same"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = x.astype(self.dtype)
    widths = (self.width // 2, self.width // 2, self.width)
    for i, (features, stride) in enumerate(zip(widths, (2, 1, 1))):
      x = layers.conv(features, 3, stride, dtype=self.dtype,
                      name=f"conv1_{i}", padding=self.padding)(x)
      x = nn.relu(layers.batch_norm(train, self.bn_axis_name,
                                    dtype=self.dtype, name=f"bn1_{i}")(x))
    return layers.max_pool_3x3_s2(x, self.padding)


class SEResNet(StemSplit):
  """SE-ResNet backbone + head (module docstring).

  Attributes:
    head: a head module (`GAPHead`, `GCPHead`, `DropCovHead`).
    stage_sizes: Bottlenecks per stage ((3, 4, 6, 3): SE-ResNet-50).
    last_stride: stride of layer4 (1 for GCP, as the seed; 2 for GAP).
    width: channels of the stem's output; stage i has 4 width 2^i outputs.
    dtype: backbone compute dtype (params stay float32).
    bn_axis_name: mapped axis for BatchNorm statistics, or None.
    padding: 'same' (MindSpore, the default) or 'pytorch'.
  """
  head: nn.Module
  stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
  last_stride: int = 1
  width: int = 64
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None
  padding: str = "same"

  def setup(self):
    layers.check_padding(self.padding)
    self.stem_block = SEResNetStem(self.width, self.dtype, self.bn_axis_name,
                                   self.padding, name="stem")
    strides = (1,) + (2,) * (len(self.stage_sizes) - 2) + (self.last_stride,)
    self.stages = [
        SEStage(n, self.width * 2 ** i, stride, i >= 2, self.dtype,
                self.bn_axis_name, self.padding, name=f"layer{i + 1}")
        for i, (n, stride) in enumerate(zip(self.stage_sizes, strides))]

  def from_stem(self, h: jax.Array, train: bool) -> jax.Array:
    """Stem output -> logits (B, num_classes), float32."""
    for i, stage in enumerate(self.stages):
      h = stage(h, train)
      self.sow("intermediates", f"layer{i + 1}_out", h)
    return self.head(h, train)
