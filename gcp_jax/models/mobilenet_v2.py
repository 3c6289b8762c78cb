"""MobileNetV2 whose last feature map feeds an exchangeable head.

The network of GCP_Optimization `src/models/MobileNetV2.py` (GAP) and
`MobileNetV2_MPNCOV.py` / `MobileNetV2_MPNCOV_128.py` (GCP, d = 256 / 128),
the torchvision MobileNetV2 (Sandler et al., CVPR 2018):

  stem      conv 3x3/2 -> BN -> ReLU6                      32 ch  (112 px)
  blocks    inverted residuals, (expansion t, channels c, repeats n,
            stride s of the first):
              (1, 16, 1, 1) (6, 24, 2, 2) (6, 32, 3, 2) (6, 64, 4, 2)
              (6, 96, 3, 1) (6, 160, 3, `last_stride`) (6, 320, 1, 1)
  conv_last conv 1x1 -> BN -> ReLU6                      1280 ch  (7 px)
  head      GAP / GCP (`gcp_jax.models.heads`)

An inverted residual is [1x1 conv -> BN -> ReLU6 (t != 1)] -> depthwise 3x3
conv (stride s) -> BN -> ReLU6 -> 1x1 conv -> BN, plus the input when s = 1
and the width is unchanged. Channels are int(c * width_mult) (the
reference's rounding, no divisibility by 8); the last conv has
int(1280 * max(1, width_mult)).

The reference's GCP variant changes no stride: both end in a 7 x 7 map at
224 px (M = 49), so the registry keeps `last_stride` 2 for every head
(`last_stride` = 1 gives a 14 x 14 map, not a reference model). The
reference heads: Dropout(0.2) -> FC (GAP), and a ReLU6 reduction block
1280 -> d -> covariance -> 5 Newton-Schulz steps -> triu -> Dropout(0.2) ->
FC (GCP); docs/method.md §7.6.

Parameter paths: `stem/conv`, `stem/bn`, `block{i}/expand/{conv,bn}`,
`block{i}/depthwise/{conv,bn}`, `block{i}/project_conv`, `block{i}/
project_bn` (i = 0..16), `conv_last/{conv,bn}`, `head/...`.

`method="stem"` / `method="from_stem"` split after the stem, where the
GCP_Optimization landscape code (`landscape/MobileNetV2/models/
MobileNetV2_Base.py`) takes the perturbed output. Intermediates sown:
`stem_out`, `features_out` (the map entering the head), `head/pooled`.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from gcp_jax.models import layers
from gcp_jax.models.split import ConvBNAct, MobileBackbone

Dtype = Any

# (expansion t, channels c, repeats n, stride s); the stride of the 160
# stage is `last_stride`.
INVERTED_RESIDUALS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                      (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                      (6, 320, 1, 1))
LAST_STRIDED = 5           # index of the last stage with stride 2
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


class ConvBNReLU6(ConvBNAct):
  """k x k conv (no bias, PyTorch padding k // 2) -> BN -> ReLU6
  (`split.ConvBNAct`); `groups` = features = C_in makes it depthwise."""
  relu6: bool = True


class InvertedResidual(nn.Module):
  """Expand (1x1, t C_in channels) -> depthwise 3x3 (stride) -> linear
  1x1 projection to `features`, with the identity shortcut when stride 1
  and C_in = features. (B, H, W, C_in) -> (B, H / s, W / s, features)."""
  features: int
  stride: int
  expand_ratio: int
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    hidden = int(round(x.shape[-1] * self.expand_ratio))
    y = x
    if self.expand_ratio != 1:
      y = ConvBNReLU6(hidden, 1, dtype=self.dtype,
                      bn_axis_name=self.bn_axis_name, name="expand")(y, train)
    y = ConvBNReLU6(hidden, 3, self.stride, groups=hidden, dtype=self.dtype,
                    bn_axis_name=self.bn_axis_name,
                    name="depthwise")(y, train)
    y = layers.conv(self.features, 1, dtype=self.dtype,
                    name="project_conv")(y)
    y = layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype,
                          name="project_bn")(y)
    if self.stride == 1 and x.shape[-1] == self.features:
      return x + y
    return y


class MobileNetV2(MobileBackbone):
  """MobileNetV2 backbone + head (module docstring). `last_stride` is the
  stride of the first block of the 160-channel stage; `width_mult` any
  positive multiplier. Fields: `MobileBackbone`."""

  def setup(self):
    self.check_last_stride()
    self.stem_block = ConvBNReLU6(int(STEM_CHANNELS * self.width_mult), 3, 2,
                                  dtype=self.dtype,
                                  bn_axis_name=self.bn_axis_name, name="stem")
    blocks = []
    for stage, (t, c, n, s) in enumerate(INVERTED_RESIDUALS):
      if stage == LAST_STRIDED:
        s = self.last_stride
      for i in range(n):
        blocks.append(InvertedResidual(
            int(c * self.width_mult), s if i == 0 else 1, t, self.dtype,
            self.bn_axis_name, name=f"block{len(blocks)}"))
    self.units = blocks
    self.last_conv = ConvBNReLU6(
        int(LAST_CHANNELS * max(1.0, self.width_mult)), 1, dtype=self.dtype,
        bn_axis_name=self.bn_axis_name, name="conv_last")
