"""Torch ResNets of the GCP references, with their parameter names.

  GCPResNet(head="isqrt")    fast-MPN-COV MPNCOVResNet / GCP_Optimization
      ResNet_MPNCOV: torchvision ResNet with a stride-1 layer4 ->
      layer_reduce (1x1 conv, no bias) -> layer_reduce_bn -> ReLU ->
      covariance -> 5 Newton-Schulz iterations -> triu -> fc
  GCPResNet(head="dropcov")  DropCov ResNet_ACD: the same without the square
      root; `eca_layer.conv` (Conv1d(1, 1, 3), no bias) is a parameter used
      only in training (eval: covariance -> triu -> fc)
  GCPResNet(head="cov")      covariance -> triu -> fc
  GCPResNet(head="gap")      torchvision ResNet (stride-2 layer4, avgpool, fc)

Bottlenecks carry the stride on the 3x3 conv (torchvision "v1.5");
initialisation as the references (convs kaiming-normal fan_out, BN 1 / 0,
Linear default). `width` and `small_input` (3x3/1 stem, no max-pool) give
the small networks gcp-jax uses in tests (`resnet_tiny_*`); the references
always use width 64 and the 7x7 stem. `bn_eps(name)` sets each
BatchNorm's epsilon (MindSpore uses 1e-4 in most places). `padding="same"`
pads the 3x3 / 7x7 convolutions and the max-pool as MindSpore's
`pad_mode='same'` does (the seed's Bottleneck ResNets), written here from
that definition: a total of max((ceil(H / s) - 1) s + k - H, 0) pixels, half
before and the odd one after.
"""

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torch_reference import ops


def _same_pad(x: torch.Tensor, k: int, s: int, value: float) -> torch.Tensor:
  """Pads NCHW `x` for a k x k window at stride s, MindSpore 'same'."""
  pads = []
  for size in (x.shape[3], x.shape[2]):   # F.pad lists the last axis first
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    pads += [total // 2, total - total // 2]
  return F.pad(x, pads, value=value)


class SameConv2d(nn.Conv2d):
  """A bias-free nn.Conv2d (same parameters) padded with zeros, 'same'."""

  def forward(self, x):
    return super().forward(_same_pad(x, self.kernel_size[0], self.stride[0],
                                     0.0))


class SameMaxPool2d(nn.MaxPool2d):
  """nn.MaxPool2d padded 'same' with -inf (padding never wins)."""

  def forward(self, x):
    return super().forward(_same_pad(x, self.kernel_size, self.stride,
                                     float("-inf")))


def conv(cin: int, cout: int, k: int, stride: int, padding: str
         ) -> nn.Conv2d:
  """k x k conv without bias: PyTorch padding k // 2, or 'same'."""
  if padding == "same" and k > 1:
    return SameConv2d(cin, cout, k, stride, 0, bias=False)
  return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride, downsample, eps,
               padding="pytorch"):
    super().__init__()
    self.conv1 = conv(inplanes, planes, 3, stride, padding)
    self.bn1 = nn.BatchNorm2d(planes, eps=eps("bn1"))
    self.conv2 = conv(planes, planes, 3, 1, padding)
    self.bn2 = nn.BatchNorm2d(planes, eps=eps("bn2"))
    self.downsample = downsample

  def forward(self, x):
    out = torch.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    shortcut = x if self.downsample is None else self.downsample(x)
    return torch.relu(out + shortcut)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride, downsample, eps,
               padding="pytorch"):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes, eps=eps("bn1"))
    self.conv2 = conv(planes, planes, 3, stride, padding)
    self.bn2 = nn.BatchNorm2d(planes, eps=eps("bn2"))
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4, eps=eps("bn3"))
    self.downsample = downsample

  def forward(self, x):
    out = torch.relu(self.bn1(self.conv1(x)))
    out = torch.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    shortcut = x if self.downsample is None else self.downsample(x)
    return torch.relu(out + shortcut)


class ECA(nn.Module):
  """DropCov's eca_layer: softmax over channels of a k=3 Conv1d of GAP(x)."""

  def __init__(self):
    super().__init__()
    self.conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)

  def forward(self, x):
    s = x.mean(dim=(2, 3))[:, None, :]                  # (B, 1, C)
    return torch.softmax(self.conv(s)[:, 0, :], dim=1)  # (B, C)


class GCPResNet(nn.Module):
  """See the module docstring. `forward` runs the head in float32 with
  autocast off; in training mode it is the iSQRT / GAP / covariance model's
  training forward (DropCov's ECA dropout is not applied: for DropCov it is
  the eval-mode forward). `functions=True` runs the iSQRT head through the
  reference's hand-differentiated Functions (`ops.fmpn_head`)."""

  def __init__(self, block, layers, num_classes, head="isqrt", dim=256,
               width=64, small_input=False,
               bn_eps: Callable[[str], float] = lambda name: 1e-5,
               functions=False, padding="pytorch"):
    super().__init__()
    self.head, self.small_input = head, small_input
    self.functions = functions
    if small_input:
      self.conv1 = conv(3, width, 3, 1, padding)
    else:
      self.conv1 = conv(3, width, 7, 2, padding)
    self.bn1 = nn.BatchNorm2d(width, eps=bn_eps("bn1"))
    self.maxpool = (SameMaxPool2d(3, 2) if padding == "same"
                    else nn.MaxPool2d(3, 2, 1))
    inplanes = width
    last_stride = 2 if head == "gap" else 1
    for i, blocks in enumerate(layers):
      planes, stride = width * 2 ** i, (1, 2, 2, last_stride)[i]
      stage = []
      for j in range(blocks):
        prefix = f"layer{i + 1}.{j}"
        eps = lambda n, p=prefix: bn_eps(f"{p}.{n}")  # noqa: E731
        downsample = None
        if j == 0 and (stride != 1 or inplanes != planes * block.expansion):
          downsample = nn.Sequential(
              nn.Conv2d(inplanes, planes * block.expansion, 1, stride,
                        bias=False),
              nn.BatchNorm2d(planes * block.expansion,
                             eps=eps("downsample.1")))
        stage.append(block(inplanes, planes, stride if j == 0 else 1,
                           downsample, eps, padding))
        inplanes = planes * block.expansion
      setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
    if head == "gap":
      self.fc = nn.Linear(inplanes, num_classes)
    else:
      self.layer_reduce = nn.Conv2d(inplanes, dim, 1, bias=False)
      self.layer_reduce_bn = nn.BatchNorm2d(dim, eps=bn_eps("layer_reduce_bn"))
      if head == "dropcov":
        self.eca_layer = ECA()
      self.fc = nn.Linear(dim * (dim + 1) // 2, num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out",
                                nonlinearity="relu")

  def reduced(self, x):
    """Images -> the ReLU output of the reduction block (GCP heads)."""
    x = torch.relu(self.bn1(self.conv1(x)))
    if not self.small_input:
      x = self.maxpool(x)
    for i in range(1, 5):
      x = getattr(self, f"layer{i}")(x)
    if self.head == "gap":
      return x
    return torch.relu(self.layer_reduce_bn(self.layer_reduce(x)))

  def forward(self, x):
    x = self.reduced(x)
    if self.head == "gap":
      return self.fc(x.mean(dim=(2, 3)))
    with torch.autocast(x.device.type, enabled=False):
      x = x.float()
      if self.head == "isqrt" and self.functions:
        return self.fc(ops.fmpn_head(x))
      cov = ops.covariance(x)
      if self.head == "isqrt":
        cov = ops.isqrt(cov)
      return self.fc(ops.triu(cov))


def build(arch: str, num_classes: int, **kwargs) -> GCPResNet:
  """'resnet18' | '34' | '50' | '101' | '152' | 'resnet_tiny'."""
  block, layers = {
      "resnet18": (BasicBlock, (2, 2, 2, 2)),
      "resnet34": (BasicBlock, (3, 4, 6, 3)),
      "resnet50": (Bottleneck, (3, 4, 6, 3)),
      "resnet101": (Bottleneck, (3, 4, 23, 3)),
      "resnet152": (Bottleneck, (3, 8, 36, 3)),
      "resnet_tiny": (BasicBlock, (1, 1, 1, 1)),
  }[arch]
  return GCPResNet(block, layers, num_classes, **kwargs)


def randomize(model: nn.Module, seed: int) -> nn.Module:
  """Non-trivial BatchNorm statistics and affine parameters, a random ECA
  kernel; conv and fc weights keep their (seeded) initialisation. Returns
  the model in eval mode."""
  gen = torch.Generator().manual_seed(seed)

  def uniform(t, lo, hi):
    t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=gen))

  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):
        uniform(m.weight, 0.5, 1.5)
        uniform(m.bias, -0.2, 0.2)
        uniform(m.running_mean, -0.2, 0.2)
        uniform(m.running_var, 0.5, 2.0)
        m.num_batches_tracked.fill_(1234)
      elif isinstance(m, nn.Conv1d):
        uniform(m.weight, -1.0, 1.0)
  return model.eval()


def logits(model: nn.Module, images_nhwc: np.ndarray) -> np.ndarray:
  """Eval-mode logits of NHWC numpy images (transposed to NCHW)."""
  x = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
  with torch.no_grad():
    return model.eval()(x).numpy()
