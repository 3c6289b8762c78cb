"""ShuffleNetV2 whose last feature map feeds an exchangeable head.

The network of GCP_Optimization `src/models/ShuffleNetV2.py` (GAP) and
`ShuffleNetV2_MPNCOV.py` (GCP, d = 256), the torchvision ShuffleNetV2 (Ma
et al., ECCV 2018); GCP_Optimization trains the 1.0x size
(`src/scripts/train/train_shufflenet.sh`):

  stem     conv 3x3/2 -> BN -> ReLU -> max-pool 3x3/2       24 ch  (56 px)
  stage2   4 units, the first at stride 2                   116 ch (28 px)
  stage3   8 units, the first at stride 2                   232 ch (14 px)
  stage4   4 units, the first at stride `last_stride`       464 ch  (7 px)
  conv5    conv 1x1 -> BN -> ReLU                          1024 ch
  head     GAP / GCP (`gcp_jax.models.heads`)

(channels of the 1.0x size; `SIZES` has the others). A unit's output is
channel_shuffle(concat(a, b), 2). The first unit of a stage (the
"downsampling" unit) takes the whole input into both branches:
a = branch1(x): depthwise 3x3 (stride) -> BN -> 1x1 conv -> BN -> ReLU,
b = branch2(x): 1x1 conv -> BN -> ReLU -> depthwise 3x3 (stride) -> BN ->
1x1 conv -> BN -> ReLU, each with half the output channels. The other units
split the channels into halves (x1, x2) and set a = x1, b = branch2(x2).

The reference's GCP variant changes no stride (7 x 7 at 224 px, M = 49), so
the registry keeps `last_stride` 2 for every head. Its heads: GAP -> FC
(no dropout) and a ReLU6 reduction block 1024 -> 256 -> covariance -> 5
Newton-Schulz steps -> triu -> FC (docs/method.md §7.6).

Parameter paths: `stem/conv`, `stem/bn`, `stage{2,3,4}/unit{j}/
branch1_dw{,_bn}`, `.../branch1_pw{,_bn}`, `.../branch2_pw1{,_bn}`,
`.../branch2_dw{,_bn}`, `.../branch2_pw2{,_bn}`, `conv5/{conv,bn}`,
`head/...`. Intermediates sown: `stem_out`, `features_out`, `head/pooled`.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from gcp_jax.models import layers
from gcp_jax.models.split import ConvBNAct, MobileBackbone

Dtype = Any

STAGE_REPEATS = (4, 8, 4)
# width_mult -> output channels of (stem, stage2, stage3, stage4, conv5), the
# reference's shufflenet_v2_x{0_5,1_0,1_5,2_0}.
SIZES = {0.5: (24, 48, 96, 192, 1024), 1.0: (24, 116, 232, 464, 1024),
         1.5: (24, 176, 352, 704, 1024), 2.0: (24, 244, 488, 976, 2048)}


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """(B, H, W, C) -> the same with output channel j g' + g equal to input
  channel g (C / groups) + j: PyTorch's view (B, g, C/g, H, W) ->
  transpose(1, 2) -> flatten, channels-last."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, groups, c // groups)
  return jnp.swapaxes(x, 3, 4).reshape(b, h, w, c)


class ShuffleUnit(nn.Module):
  """One ShuffleNetV2 unit (module docstring): (B, H, W, C_in) ->
  (B, H / s, W / s, features).

  Attributes:
    features: output channels (even).
    stride: of the depthwise convolutions.
    downsample: the first unit of a stage (two branches on the whole
      input); otherwise C_in = features and the input is split.
  """
  features: int
  stride: int
  downsample: bool
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  def _conv_bn(self, x: jax.Array, train: bool, channels: int, kernel: int,
               stride: int, name: str, relu: bool) -> jax.Array:
    """1x1 conv, or depthwise 3x3 conv, -> BN [-> ReLU]."""
    groups = channels if kernel == 3 else 1
    x = layers.conv(channels, kernel, stride, dtype=self.dtype, groups=groups,
                    name=name)(x)
    x = layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype,
                          name=f"{name}_bn")(x)
    return nn.relu(x) if relu else x

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    half = self.features // 2
    if self.downsample:
      a = self._conv_bn(x, train, x.shape[-1], 3, self.stride, "branch1_dw",
                        False)
      a = self._conv_bn(a, train, half, 1, 1, "branch1_pw", True)
      b = x
    else:
      if self.stride != 1 or x.shape[-1] != self.features:
        raise ValueError("A unit that splits its input needs stride 1 and "
                         "C_in = features.")
      a, b = x[..., :half], x[..., half:]
    b = self._conv_bn(b, train, half, 1, 1, "branch2_pw1", True)
    b = self._conv_bn(b, train, half, 3, self.stride, "branch2_dw", False)
    b = self._conv_bn(b, train, half, 1, 1, "branch2_pw2", True)
    return channel_shuffle(jnp.concatenate([a, b], axis=-1), 2)


class ShuffleStage(nn.Module):
  """`num_units` units; the first is the downsampling unit at `stride`."""
  num_units: int
  features: int
  stride: int
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for j in range(self.num_units):
      x = ShuffleUnit(self.features, self.stride if j == 0 else 1, j == 0,
                      self.dtype, self.bn_axis_name,
                      name=f"unit{j}")(x, train)
    return x


class ConvBNReLU(ConvBNAct):
  """k x k conv (no bias, padding k // 2) -> BN -> ReLU, then the 3x3/2
  max-pool (padding 1) when `max_pool`: the stem and conv5
  (`split.ConvBNAct`)."""


class ShuffleNetV2(MobileBackbone):
  """ShuffleNetV2 backbone + head (module docstring). `last_stride` is the
  stride of the first unit of stage4; `width_mult` a key of `SIZES` (the
  reference's x0.5 .. x2.0). Fields: `MobileBackbone`."""

  def setup(self):
    if self.width_mult not in SIZES:
      raise ValueError(f"ShuffleNetV2 width_mult must be one of "
                       f"{', '.join(map(str, SIZES))}, got {self.width_mult}.")
    self.check_last_stride()
    channels = SIZES[self.width_mult]
    self.stem_block = ConvBNReLU(channels[0], 3, 2, max_pool=True,
                                 dtype=self.dtype,
                                 bn_axis_name=self.bn_axis_name, name="stem")
    strides = (2, 2, self.last_stride)
    self.units = [
        ShuffleStage(repeats, out, stride, self.dtype, self.bn_axis_name,
                     name=f"stage{i + 2}")
        for i, (repeats, out, stride) in enumerate(
            zip(STAGE_REPEATS, channels[1:4], strides))]
    self.last_conv = ConvBNReLU(channels[4], 1, dtype=self.dtype,
                                bn_axis_name=self.bn_axis_name, name="conv5")
