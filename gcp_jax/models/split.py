"""`StemSplit`: the base of the feature-map backbones, split after the stem;
`MobileBackbone` and `ConvBNAct`: the fields, the tail and the conv-BN
layer shared by MobileNetV2 and ShuffleNetV2.

A subclass builds its stem as `self.stem_block` (a module called as
`stem_block(images, train)`) in `setup` and defines `from_stem(h, train)`
-> logits. This base gives the rest of the backbone contract
(docs/extending.md, 'Adding a backbone'):

  stem(images, train)   (B, H, W, 3) -> the stem output, cast to the
                        backbone's `dtype` first; sown as
                        `intermediates/stem_out`
  __call__(images, train=False) = from_stem(stem(images, train), train)

The gradient probe (docs/method.md §10.1) perturbs the stem output through
`apply(..., method="stem")` and `method="from_stem"`.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from gcp_jax.models import layers


class StemSplit(nn.Module):
  """See the module docstring."""

  def stem(self, x: jax.Array, train: bool) -> jax.Array:
    """(B, H, W, 3) images -> stem output."""
    h = self.stem_block(x.astype(self.dtype), train)
    self.sow("intermediates", "stem_out", h)
    return h

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """(B, H, W, 3) images -> (B, num_classes) float32 logits."""
    return self.from_stem(self.stem(x, train), train)


class MobileBackbone(StemSplit):
  """A GCP_Optimization mobile network: stem -> `self.units` -> 1 x 1
  `self.last_conv` (sown as `intermediates/features_out`) -> head.

  A subclass builds `stem_block`, `units` (a list of modules called as
  `unit(h, train)`) and `last_conv` in `setup`, after `check_last_stride`.

  Attributes:
    head: a head module (`GAPHead`, `GCPHead`, `DropCovHead`).
    last_stride: stride of the network's last strided stage: 2 in the
      reference for GAP and GCP alike (7 x 7 at 224 px); 1 keeps a 14 x 14
      map.
    width_mult: the reference's channel multiplier (1.0 in every
      GCP_Optimization model).
    dtype: backbone compute dtype (params stay float32; heads use float32).
    bn_axis_name: mapped axis over which BN statistics are averaged in
      training (None: per-device statistics).
  """
  head: nn.Module
  last_stride: int = 2
  width_mult: float = 1.0
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  def check_last_stride(self) -> None:
    if self.last_stride not in (1, 2):
      raise ValueError(f"last_stride must be 1 or 2, got {self.last_stride}.")

  def from_stem(self, h: jax.Array, train: bool) -> jax.Array:
    """Stem output -> logits (B, num_classes), float32."""
    for unit in self.units:
      h = unit(h, train)
    h = self.last_conv(h, train)
    self.sow("intermediates", "features_out", h)
    return self.head(h, train)


class ConvBNAct(nn.Module):
  """k x k conv (no bias, PyTorch padding k // 2; `groups` = features =
  C_in makes it depthwise) -> BN -> ReLU6 if `relu6` else ReLU, then the
  3x3/2 max-pool (padding 1) if `max_pool`. (B, H, W, C_in) ->
  (B, ceil(H / s), ceil(W / s), features), halved again by the pool."""
  features: int
  kernel: int
  stride: int = 1
  groups: int = 1
  relu6: bool = False
  max_pool: bool = False
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = layers.conv(self.features, self.kernel, self.stride, dtype=self.dtype,
                    groups=self.groups, name="conv")(x)
    x = layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype,
                          name="bn")(x)
    x = nn.relu6(x) if self.relu6 else nn.relu(x)
    return layers.max_pool_3x3_s2(x) if self.max_pool else x
