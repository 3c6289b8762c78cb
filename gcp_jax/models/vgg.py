"""VGG with BatchNorm (torchvision `vgg16_bn` topology) ending in a head.

  block1   conv3x3 64  x 2                         -> max-pool 2x2/2  (stem)
  block2   conv3x3 128 x 2                         -> max-pool 2x2/2
  block3   conv3x3 256 x 3                         -> max-pool 2x2/2
  block4   conv3x3 512 x 3                         -> max-pool 2x2/2
  block5   conv3x3 512 x 3                         (no max-pool)
  head     GAP / GCP / DropCov (`gcp_jax.models.heads`)

Every conv is 3 x 3, stride 1, padding 1, with a bias, followed by
BatchNorm and ReLU ("D" configuration, 13 convolutions). As in fast-MPN-COV
(`src/network/mpncovvgg.py`, `features[:-1]`, and `src/network/base.py`,
`_reconstruct_vgg`), the fifth max-pool is dropped for every representation,
so the head sees conv5_3 at 1/16 of the input: 14 x 14 at 224 px, 28 x 28 at
448 px (docs/method.md §7.5). There is no strided convolution, hence no
`last_stride` field (the registry sets it only on backbones that have one).

Parameter paths: `block{i}/conv{j}` (kernel, bias), `block{i}/bn{j}`, `head/...`
with i = 1..5 and j = 1..3, conv{i}_{j} of the VGG paper.

`model.apply(v, x, train, method="stem")` and `method="from_stem"` split the
network after block1 and its max-pool. Intermediates sown: `stem_out`,
`block2_out`..`block5_out`, and the head's.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from gcp_jax.models import layers

Dtype = Any

# Widths of the convolutions of each block, VGG "D" (VGG-16).
VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512),
         (512, 512, 512))


class VGGBlock(nn.Module):
  """conv3x3 (bias) -> BN -> ReLU for each width, then an optional 2x2/2
  max-pool (PyTorch's floor mode)."""
  widths: tuple[int, ...]
  pool: bool
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for j, width in enumerate(self.widths, start=1):
      x = layers.conv(width, 3, dtype=self.dtype, name=f"conv{j}",
                      use_bias=True)(x)
      x = nn.relu(layers.batch_norm(train, self.bn_axis_name,
                                    dtype=self.dtype, name=f"bn{j}")(x))
    return nn.max_pool(x, (2, 2), (2, 2)) if self.pool else x


class VGG(nn.Module):
  """VGG-BN backbone without its last max-pool, then a head.

  Attributes:
    blocks: conv widths per block, e.g. `VGG16`; every block but the last
      ends in a max-pool.
    head: a head module (`GAPHead`, `GCPHead`, `DropCovHead`).
    dtype: backbone compute dtype (params stay float32; heads use float32).
    bn_axis_name: mapped axis name over which BN statistics are averaged in
      training (None: per-device statistics).
  """
  blocks: tuple[tuple[int, ...], ...]
  head: nn.Module
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  def setup(self):
    last = len(self.blocks) - 1
    self.stages = [
        VGGBlock(widths, i < last, self.dtype, self.bn_axis_name,
                 name=f"block{i + 1}")
        for i, widths in enumerate(self.blocks)]

  def stem(self, x: jax.Array, train: bool) -> jax.Array:
    """(B, H, W, 3) images -> block1 output (B, H/2, W/2, 64)."""
    h = self.stages[0](x.astype(self.dtype), train)
    self.sow("intermediates", "stem_out", h)
    return h

  def from_stem(self, h: jax.Array, train: bool) -> jax.Array:
    """block1 output -> logits (B, num_classes), float32."""
    for i, stage in enumerate(self.stages[1:], start=2):
      h = stage(h, train)
      self.sow("intermediates", f"block{i}_out", h)
    return self.head(h, train)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """(B, H, W, 3) images -> (B, num_classes) float32 logits."""
    return self.from_stem(self.stem(x, train), train)
