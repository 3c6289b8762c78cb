"""Torch SE-ResNet of the TPAMI seed (MindSpore `src/resnet.py`,
`se_resnet50` with `use_se=True`), written from that definition with its
parameter names, for tests.

  stem    conv1_0 (3x3/2, width / 2) -> bn1_0 -> ReLU -> conv1_1 (3x3,
          width / 2) -> bn1_1 -> ReLU -> conv1_2 (3x3, width) -> bn1 ->
          ReLU -> max-pool 3x3/2
  block   conv1 (1x1) -> bn1 -> ReLU -> [stride 1: conv2 (3x3) -> bn2 ->
          ReLU | stride 2: e2 = conv 3x3 -> BN -> ReLU -> max-pool 2x2/2]
          -> conv3 (1x1, x4) -> bn3 -> [last block of layer3 / layer4:
          squeeze-excite with se_dense_0 (C -> C/4), ReLU, se_dense_1
          (C/4 -> C), sigmoid] + shortcut -> ReLU; the shortcut is
          down_sample_layer = [max-pool 2x2/2 (stride 2)] -> 1x1 conv -> BN
  head    "isqrt": layer_reduce (1x1) -> layer_reduce_bn -> ReLU ->
          covariance -> 5 Newton-Schulz steps -> triu -> fc; "gap": mean ->
          fc

Every convolution and max-pool pads as MindSpore's pad_mode='same'
(`resnet.SameConv2d`, `resnet.SameMaxPool2d`). BatchNorm epsilon 1e-5
(MindSpore's is 1e-4) so that logits compare with gcp-jax's BatchNorm.
"""

import torch
from torch import nn

from torch_reference import ops
from torch_reference.resnet import SameConv2d, SameMaxPool2d


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
  if k == 1:
    return nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
  return SameConv2d(cin, cout, k, stride, 0, bias=False)


class SEBlock(nn.Module):

  def __init__(self, cin: int, planes: int, stride: int, squeeze: bool):
    super().__init__()
    out = planes * 4
    self.stride, self.squeeze = stride, squeeze
    self.conv1 = _conv(cin, planes, 1)
    self.bn1 = nn.BatchNorm2d(planes)
    if stride != 1:
      self.e2 = nn.Sequential(_conv(planes, planes, 3), nn.BatchNorm2d(planes),
                              nn.ReLU(), SameMaxPool2d(2, 2))
    else:
      self.conv2 = _conv(planes, planes, 3)
      self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = _conv(planes, out, 1)
    self.bn3 = nn.BatchNorm2d(out)
    if squeeze:
      self.se_dense_0 = nn.Linear(out, out // 4)
      self.se_dense_1 = nn.Linear(out // 4, out)
    self.down_sample_layer = None
    if stride != 1:
      self.down_sample_layer = nn.Sequential(
          SameMaxPool2d(2, 2), _conv(cin, out, 1), nn.BatchNorm2d(out))
    elif cin != out:
      self.down_sample_layer = nn.Sequential(_conv(cin, out, 1),
                                             nn.BatchNorm2d(out))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    if self.stride != 1:
      y = self.e2(y)
    else:
      y = torch.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    if self.squeeze:
      s = torch.relu(self.se_dense_0(y.mean(dim=(2, 3))))
      y = y * torch.sigmoid(self.se_dense_1(s))[:, :, None, None]
    shortcut = x if self.down_sample_layer is None else (
        self.down_sample_layer(x))
    return torch.relu(y + shortcut)


class SEResNet(nn.Module):
  """See the module docstring; `width` 64 and stages (3, 4, 6, 3) give the
  seed's SE-ResNet-50."""

  def __init__(self, num_classes: int, head: str = "isqrt", dim: int = 128,
               width: int = 64, stages=(3, 4, 6, 3)):
    super().__init__()
    self.head = head
    self.conv1_0 = _conv(3, width // 2, 3, 2)
    self.bn1_0 = nn.BatchNorm2d(width // 2)
    self.conv1_1 = _conv(width // 2, width // 2, 3)
    self.bn1_1 = nn.BatchNorm2d(width // 2)
    self.conv1_2 = _conv(width // 2, width, 3)
    self.bn1 = nn.BatchNorm2d(width)
    self.maxpool = SameMaxPool2d(3, 2)
    cin = width
    last_stride = 2 if head == "gap" else 1
    for i, blocks in enumerate(stages):
      planes, stride = width * 2 ** i, (1, 2, 2, last_stride)[i]
      setattr(self, f"layer{i + 1}", nn.Sequential(*[
          SEBlock(cin if j == 0 else planes * 4, planes,
                  stride if j == 0 else 1, i >= 2 and j == blocks - 1)
          for j in range(blocks)]))
      cin = planes * 4
    if head == "gap":
      self.fc = nn.Linear(cin, num_classes)
    else:
      self.layer_reduce = _conv(cin, dim, 1)
      self.layer_reduce_bn = nn.BatchNorm2d(dim)
      self.fc = nn.Linear(dim * (dim + 1) // 2, num_classes)

  def forward(self, x):
    x = torch.relu(self.bn1_0(self.conv1_0(x)))
    x = torch.relu(self.bn1_1(self.conv1_1(x)))
    x = self.maxpool(torch.relu(self.bn1(self.conv1_2(x))))
    for i in range(1, 5):
      x = getattr(self, f"layer{i}")(x)
    if self.head == "gap":
      return self.fc(x.mean(dim=(2, 3)))
    x = torch.relu(self.layer_reduce_bn(self.layer_reduce(x)))
    return self.fc(ops.triu(ops.isqrt(ops.covariance(x))))
