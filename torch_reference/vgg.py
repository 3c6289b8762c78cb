"""fast-MPN-COV's VGG-16-BN models in PyTorch, for tests only.

Written from fast-MPN-COV `src/network/mpncovvgg.py` and
`src/network/base.py` (not copied): torchvision's `make_layers(cfg['D'],
batch_norm=True)` without its last max-pool (`features[:-1]`), then

  head="isqrt"  `MPNCOV(input_dim=512, dimension_reduction=dim, iterNum=5)`:
                1x1 conv (no bias) -> BN -> ReLU, covariance, Newton-Schulz
                square root, triu (`torch_reference.ops`);
  head="gap"    global average pooling (GAvP);

and a classifier: Linear(D, h) -> ReLU -> Dropout for each h in `hidden`
((4096, 4096) in `mpncovvgg16_bn`), then Linear(., num_classes). State-dict
names as the reference's: `features.{k}` (torchvision's indices),
`representation.conv_dr_block.{0,1}` (the reduction conv / BN),
`classifier.{k}`.
"""

import torch
from torch import nn

from torch_reference import ops

VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512),
         (512, 512, 512))


def features(blocks=VGG16) -> nn.Sequential:
  """conv3x3(pad 1, bias) -> BN -> ReLU per width, a 2x2/2 max-pool after
  each block but the last."""
  mods, cin = [], 3
  for i, widths in enumerate(blocks):
    for width in widths:
      mods += [nn.Conv2d(cin, width, 3, padding=1), nn.BatchNorm2d(width),
               nn.ReLU()]
      cin = width
    if i < len(blocks) - 1:
      mods.append(nn.MaxPool2d(2, 2))
  return nn.Sequential(*mods)


class MPNCOVVGG(nn.Module):
  """See the module docstring."""

  def __init__(self, num_classes: int, head: str = "isqrt", dim: int = 256,
               hidden: tuple[int, ...] = (4096, 4096), blocks=VGG16,
               num_iters: int = 5):
    super().__init__()
    self.head, self.num_iters, self.blocks = head, num_iters, blocks
    self.features = features(blocks)
    channels = blocks[-1][-1]
    if head == "isqrt":
      self.representation = nn.Module()
      self.representation.conv_dr_block = nn.Sequential(
          nn.Conv2d(channels, dim, 1, bias=False), nn.BatchNorm2d(dim),
          nn.ReLU())
      width = dim * (dim + 1) // 2
    else:
      width = channels
    mods = []
    for h in hidden:
      mods += [nn.Linear(width, h), nn.ReLU(), nn.Dropout()]
      width = h
    mods.append(nn.Linear(width, num_classes))
    self.classifier = nn.Sequential(*mods)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.features(x)
    if self.head == "gap":
      return self.classifier(x.mean(dim=(2, 3)))
    x = self.representation.conv_dr_block(x)
    x = ops.triu(ops.isqrt(ops.covariance(x), self.num_iters))
    return self.classifier(x)
