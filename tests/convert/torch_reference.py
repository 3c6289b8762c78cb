"""Test-only PyTorch versions of the reference GCP ResNets, with the
references' parameter names, written from METHOD.md (sections 1-3, 5.1).

  GCPResNet(head="isqrt")    fast-MPN-COV MPNCOVResNet / GCPO ResNet_MPNCOV:
      torchvision ResNet with a stride-1 layer4 -> layer_reduce (1x1 conv, no
      bias) -> layer_reduce_bn -> ReLU -> covariance -> 5 Newton-Schulz
      iterations -> triu -> fc
  GCPResNet(head="dropcov")  DropCov ResNet_ACD: the same without the square
      root; `eca_layer.conv` (Conv1d(1, 1, 3), no bias) is a parameter used
      only in training (eval: covariance -> triu -> fc)
  GCPResNet(head="gap")      torchvision ResNet (stride-2 layer4, avgpool, fc)

`width` and `small_input` (3x3/1 stem, no max-pool) give the small networks
gcp-jax uses in tests (`resnet_tiny_*`); the references themselves always
use width 64 and the 7x7 stem. `bn_eps(name)` sets each BatchNorm's epsilon
(MindSpore uses 1e-4 in most places).

Also here: the checkpoint layouts the tests write (DataParallel `.pth.tar`,
fast-MPN-COV `Newmodel` names, MindSpore model-zoo names).
"""

import re
from typing import Callable

import numpy as np
import torch
from torch import nn

NS_ITERATIONS = 5


def covariance(x: torch.Tensor) -> torch.Tensor:
  """(B, C, H, W) -> (B, C, C) = X Ibar X^T, Ibar = (I - 11^T / M) / M."""
  b, c, h, w = x.shape
  m = h * w
  feats = x.reshape(b, c, m)
  ibar = (torch.eye(m, dtype=x.dtype) - torch.full((m, m), 1.0 / m,
                                                   dtype=x.dtype)) / m
  return feats @ ibar @ feats.transpose(1, 2)


def isqrt(cov: torch.Tensor, n: int = NS_ITERATIONS) -> torch.Tensor:
  """Trace-normalised coupled Newton-Schulz square root (METHOD 2.1): k = 1
  special-cased, k = N computes Y only, result scaled by sqrt(trace)."""
  d = cov.shape[-1]
  trace = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1)[:, None, None]
  a = cov / trace
  i3 = 3.0 * torch.eye(d, dtype=cov.dtype)
  if n == 1:
    y = 0.5 * a @ (i3 - a)
  else:
    t = 0.5 * (i3 - a)
    y, z = a @ t, t
    for _ in range(n - 2):
      t = 0.5 * (i3 - z @ y)
      y, z = y @ t, t @ z
    y = 0.5 * y @ (i3 - z @ y)
  return y * torch.sqrt(trace)


def triu(mat: torch.Tensor) -> torch.Tensor:
  """(B, d, d) -> (B, d (d + 1) / 2): the non-zeros of ones(d, d).triu(),
  flattened row-major (the reference's Triuvec order), unscaled."""
  d = mat.shape[-1]
  index = torch.ones(d, d).triu().reshape(-1).nonzero().reshape(-1)
  return mat.reshape(mat.shape[0], d * d)[:, index]


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride, downsample, eps):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes, eps=eps("bn1"))
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes, eps=eps("bn2"))
    self.downsample = downsample

  def forward(self, x):
    out = torch.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    shortcut = x if self.downsample is None else self.downsample(x)
    return torch.relu(out + shortcut)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride, downsample, eps):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes, eps=eps("bn1"))
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
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
  """See the module docstring; `forward` is the eval-mode forward."""

  def __init__(self, block, layers, num_classes, head="isqrt", dim=256,
               width=64, small_input=False,
               bn_eps: Callable[[str], float] = lambda name: 1e-5):
    super().__init__()
    self.head, self.small_input = head, small_input
    if small_input:
      self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
    else:
      self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width, eps=bn_eps("bn1"))
    self.maxpool = nn.MaxPool2d(3, 2, 1)
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
                           downsample, eps))
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
    cov = covariance(x)
    if self.head == "isqrt":
      cov = isqrt(cov)
    return self.fc(triu(cov))


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


def save_data_parallel(model: nn.Module, path) -> None:
  """A `.pth.tar` as the references' main.py save it from nn.DataParallel:
  'module.'-prefixed weights plus epoch, arch, best_prec1, optimizer."""
  state = {f"module.{k}": v for k, v in model.state_dict().items()}
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
  torch.save({"epoch": 7, "arch": "resnet_gcp", "state_dict": state,
              "best_prec1": torch.tensor(71.3),
              "optimizer": optimizer.state_dict()}, path)


def fmpn_newmodel_names(state: dict, from_scratch: bool) -> dict:
  """fast-MPN-COV `Newmodel` names with `model.features` in DataParallel:
  `features.module.<i>.`, reduction block in `features.8/9` (fine-tuned
  from a pretrained mpncovresnet) or `representation.conv_dr_block.0/1`
  (trained from scratch), `classifier.`."""
  index = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6,
           "layer4": 7, "layer_reduce": 8, "layer_reduce_bn": 9}
  out = {}
  for name, value in state.items():
    head, rest = name.split(".", 1)
    if head == "fc":
      name = f"classifier.{rest}"
    elif from_scratch and head in ("layer_reduce", "layer_reduce_bn"):
      name = f"representation.conv_dr_block.{index[head] - 8}.{rest}"
    else:
      name = f"features.module.{index[head]}.{rest}"
    out[name] = value
  return out


def mindspore_names(state: dict, rng: np.random.Generator) -> dict:
  """A MindSpore model-zoo style checkpoint of the same weights.

  BN gamma/beta/moving_mean/moving_variance, `down_sample_layer`, BasicBlock
  BNs `bn1d`/`bn2d`, classifier `end_point`, optimizer entries (`moments.*`
  of every trainable weight, `learning_rate`, `global_step`, `momentum`),
  no `num_batches_tracked`. The classifier already has MindSpore's outputs
  (build the torch model with 1001 classes).
  """
  bn_modules = {n.removesuffix(".running_mean") for n in state
                if n.endswith(".running_mean")}
  basic = not any(".conv3." in n for n in state)
  leaf_names = {"weight": "gamma", "bias": "beta",
                "running_mean": "moving_mean",
                "running_var": "moving_variance"}
  out, moments = {}, {}
  for name, value in state.items():
    value = np.asarray(value)
    module, leaf = name.rsplit(".", 1)
    if leaf == "num_batches_tracked":
      continue
    ms_leaf = leaf_names[leaf] if module in bn_modules else leaf
    ms_module = module.replace(".downsample.", ".down_sample_layer.")
    if basic:
      ms_module = re.sub(r"^(layer\d+\.\d+)\.bn(\d)$", r"\1.bn\2d", ms_module)
    ms_module = re.sub(r"^fc$", "end_point", ms_module)
    ms_name = f"{ms_module}.{ms_leaf}"
    out[ms_name] = value
    if not leaf.startswith("running"):
      moments[f"moments.{ms_name}"] = rng.normal(
          size=value.shape).astype(np.float32)
  out.update(moments)
  out["learning_rate"] = np.array(0.1, np.float32)
  out["global_step"] = np.array([500400], np.int32)
  out["momentum"] = np.array(0.9, np.float32)
  return out


def mindspore_bn_eps(name: str) -> float:
  """BN epsilons of a MindSpore model-zoo BasicBlock ResNet (res_base):
  1e-5 for the stem and shortcut BNs, 1e-4 elsewhere."""
  return 1e-5 if name == "bn1" or name.endswith("downsample.1") else 1e-4
