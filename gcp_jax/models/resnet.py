"""torchvision-topology ResNets whose last stage feeds an exchangeable head.

  stem     conv 7x7/2 -> BN -> ReLU -> maxpool 3x3/2   (small_input: conv 3x3/1,
                                                         no maxpool)
  layer1   64 ch,  stride 1      layer2  128 ch, stride 2
  layer3   256 ch, stride 2      layer4  512 ch, stride `last_stride`
  head     GAP / GCP / DropCov (`gcp_jax.models.heads`)

BasicBlock (ResNet-18/34) and Bottleneck with the stride on the 3x3 conv
("v1.5", ResNet-50/101/152). GCP networks keep layer4 at stride 1, so a
224 x 224 image ends in a 14 x 14 map (M = 196) instead of 7 x 7
(docs/method.md §7.1).

Parameter paths: `stem/conv1`, `stem/bn1`, `layer{i}/block{j}/conv{k}`,
`.../bn{k}`, `.../downsample_conv`, `.../downsample_bn`, `head/...`.

`model.apply(v, x, train, method="stem")` and `method="from_stem"` split the
network after the stem (the loss-landscape probe perturbs the stem output).
Intermediates sown: `stem_out`, `layer1_out`..`layer4_out`, and `head/pooled`.
"""

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn

from gcp_jax.models import layers
from gcp_jax.models.split import StemSplit

Dtype = Any


class ResidualBlock(nn.Module):
  """Fields and BatchNorm of the ResNet blocks: `features` channels (times
  the subclass's `expansion` at the output), the block's `stride`, compute
  `dtype`, BN statistics synchronised over `bn_axis_name`, 3x3 `padding`
  ('pytorch' or 'same'), and the epsilons of the block's BNs
  (`bn_epsilon`) and of its shortcut BN (`shortcut_bn_epsilon`)."""
  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None
  padding: str = "pytorch"
  bn_epsilon: float = 1e-5
  shortcut_bn_epsilon: float = 1e-5

  def bn(self, train: bool, name: str) -> nn.Module:
    return layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype,
                             name=name, epsilon=self.bn_epsilon)


class BasicBlock(ResidualBlock):
  """Two 3x3 convs with an identity or 1x1-conv shortcut (expansion 1)."""
  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = layers.conv(self.features, 3, self.stride, dtype=self.dtype,
                    name="conv1", padding=self.padding)(x)
    y = nn.relu(self.bn(train, "bn1")(y))
    y = layers.conv(self.features, 3, dtype=self.dtype, name="conv2",
                    padding=self.padding)(y)
    y = self.bn(train, "bn2")(y)
    return nn.relu(y + _shortcut(self, x, train))


class Bottleneck(ResidualBlock):
  """1x1 -> 3x3 -> 1x1 (x4 channels) with a shortcut.

  The stride sits on the 3x3 conv (torchvision, "v1.5", what every GCP
  reference trains) unless `stride_in_1x1` (the original ResNet "v1", whose
  FLOP count the papers quote for ResNet-50: 3.86 G instead of 4.09 G).
  """
  stride_in_1x1: bool = False
  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    s1, s3 = (self.stride, 1) if self.stride_in_1x1 else (1, self.stride)
    y = layers.conv(self.features, 1, s1, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(self.bn(train, "bn1")(y))
    y = layers.conv(self.features, 3, s3, dtype=self.dtype, name="conv2",
                    padding=self.padding)(y)
    y = nn.relu(self.bn(train, "bn2")(y))
    y = layers.conv(self.features * 4, 1, dtype=self.dtype, name="conv3")(y)
    y = self.bn(train, "bn3")(y)
    return nn.relu(y + _shortcut(self, x, train))


def _shortcut(block, x: jax.Array, train: bool) -> jax.Array:
  """Identity, or 1x1 conv + BN when the stride or the width changes
  (torchvision's `downsample`). Called inside the block's compact method."""
  out = block.features * block.expansion
  if block.stride == 1 and x.shape[-1] == out:
    return x
  x = layers.conv(out, 1, block.stride, dtype=block.dtype,
                  name="downsample_conv")(x)
  return layers.batch_norm(train, block.bn_axis_name, dtype=block.dtype,
                           name="downsample_bn",
                           epsilon=block.shortcut_bn_epsilon)(x)


class ResNetStage(nn.Module):
  """`num_blocks` blocks; the first carries the stride."""
  block_cls: type[nn.Module]
  num_blocks: int
  features: int
  stride: int
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None
  block_options: tuple[tuple[str, Any], ...] = ()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(self.num_blocks):
      x = self.block_cls(self.features, self.stride if i == 0 else 1,
                         self.dtype, self.bn_axis_name,
                         **dict(self.block_options),
                         name=f"block{i}")(x, train)
    return x


class ResNetStem(nn.Module):
  """conv1 -> bn1 -> ReLU -> max-pool (ImageNet) or a 3x3/1 conv without
  max-pool (small_input, for 8 x 8 .. 32 x 32 images)."""
  width: int = 64
  small_input: bool = False
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None
  padding: str = "pytorch"
  bn_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kernel, stride = (3, 1) if self.small_input else (7, 2)
    x = layers.conv(self.width, kernel, stride, dtype=self.dtype,
                    name="conv1", padding=self.padding)(x.astype(self.dtype))
    x = nn.relu(layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype,
                                  name="bn1", epsilon=self.bn_epsilon)(x))
    return x if self.small_input else layers.max_pool_3x3_s2(x, self.padding)


class ResNet(StemSplit):
  """ResNet backbone + head.

  Attributes:
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
    block_cls: `BasicBlock` or `Bottleneck`.
    head: a head module (`GAPHead`, `GCPHead`, `DropCovHead`).
    last_stride: stride of layer4: 2 for GAP, 1 for GCP (14 x 14 at 224 px).
    width: channels of the stem and layer1 (64); stage i has width * 2^i.
    small_input: 3x3/1 stem without max-pool.
    dtype: backbone compute dtype (params stay float32; heads use float32).
    bn_axis_name: mapped axis name over which BN statistics are averaged in
      training (None: per-device statistics).
    stride_in_1x1: Bottleneck only: original-ResNet stride placement.
    padding: 'pytorch' (k // 2 on every side) or 'same' (MindSpore's
      pad_mode='same', the odd pixel after; the seed's ResNet-50/101/152),
      for the stem, its max-pool and the 3x3 convolutions
      (`layers.conv`).
    bn_epsilon: 'pytorch' (1e-5 in every BatchNorm) or 'mindspore' (the
      seed's `_bn` / `_bn(c, res_base=True)`: 1e-4 in the blocks' BNs, and
      in the stem's and the shortcuts' BNs 1e-5 for BasicBlock nets,
      ResNet-18/34, and 1e-4 for Bottleneck nets); docs/design.md,
      'Checkpoint import'.
  """
  stage_sizes: tuple[int, ...]
  block_cls: type[nn.Module]
  head: nn.Module
  last_stride: int = 1
  width: int = 64
  small_input: bool = False
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None
  stride_in_1x1: bool = False
  padding: str = "pytorch"
  bn_epsilon: str = "pytorch"

  def setup(self):
    layers.check_padding(self.padding)
    block_eps, base_eps = self._epsilons()
    self.stem_block = ResNetStem(self.width, self.small_input, self.dtype,
                                 self.bn_axis_name, self.padding, base_eps,
                                 name="stem")
    strides = (1,) + (2,) * (len(self.stage_sizes) - 2) + (self.last_stride,)
    block_options = (("padding", self.padding), ("bn_epsilon", block_eps),
                     ("shortcut_bn_epsilon", base_eps))
    if self.stride_in_1x1:
      if self.block_cls is not Bottleneck:
        raise ValueError("stride_in_1x1 applies to Bottleneck ResNets "
                         "(ResNet-50/101/152) only.")
      block_options += (("stride_in_1x1", True),)
    self.stages = [
        ResNetStage(self.block_cls, n, self.width * 2 ** i, s, self.dtype,
                    self.bn_axis_name, block_options, name=f"layer{i + 1}")
        for i, (n, s) in enumerate(zip(self.stage_sizes, strides))]

  def _epsilons(self) -> tuple[float, float]:
    """(epsilon of the blocks' BNs, of the stem's and shortcuts' BNs)."""
    if self.bn_epsilon == "pytorch":
      return 1e-5, 1e-5
    if self.bn_epsilon == "mindspore":
      return 1e-4, (1e-5 if self.block_cls is BasicBlock else 1e-4)
    raise ValueError(f"bn_epsilon must be 'pytorch' or 'mindspore', got "
                     f"{self.bn_epsilon!r}.")

  def from_stem(self, h: jax.Array, train: bool) -> jax.Array:
    """Stem output -> logits (B, num_classes), float32."""
    for i, stage in enumerate(self.stages):
      h = stage(h, train)
      self.sow("intermediates", f"layer{i + 1}_out", h)
    return self.head(h, train)
