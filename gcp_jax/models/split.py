"""`StemSplit`: the base of the feature-map backbones, split after the stem.

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

import jax
from flax import linen as nn


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
