"""DropCov's transformer (`Deit_drop_*`) in PyTorch without timm, for tests.

Written from DropCov `Transformers/src/transformer.py` (`Vit`),
`src/model/visualTokens.py` (`DenseNetStyleModule`), `src/model/vitBlock.py`,
`src/model/classifier.py` (`Classifier`, MGCrP with "sum_fc" fusion) and
`src/representation/multi_head_pooling.py` + `covariance.py`, with timm 0.4's
`DenseBlock` (default `norm_layer=nn.ReLU`) spelled out. Module names are the
reference's, so `state_dict()` has its keys (`visual_tokens.tokens.stage.0.
denselayer1.conv1.weight`, `blocks.0.attn.qkv.weight`,
`classifier.representation.wr.weight`, ...).

  build(embed_dim, depth, num_heads, mlp_ratio, cov_heads, cov_dim,
        num_classes, image_size)   the model, reference initialisation
  randomize(model, seed)           every parameter and BN statistic random

Eval-mode forward only is meant to match gcp-jax (the training-time
`Dropout2d` on a 3-D tensor depends on the PyTorch version).
"""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class DenseLayer(nn.Module):
  """relu -> 1x1 conv -> relu -> 3x3 conv (timm DenseLayer with ReLU as
  its `norm_layer`)."""

  def __init__(self, in_ch: int, growth: int = 16, bn_size: int = 2):
    super().__init__()
    self.conv1 = nn.Conv2d(in_ch, bn_size * growth, 1, bias=False)
    self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1,
                           bias=False)

  def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
    y = self.conv1(F.relu(torch.cat(feats, 1)))
    return self.conv2(F.relu(y))


class DenseBlock(nn.ModuleDict):
  def __init__(self, in_ch: int, layers: int = 6, growth: int = 16):
    super().__init__({f"denselayer{i + 1}": DenseLayer(in_ch + i * growth)
                      for i in range(layers)})

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    feats = [x]
    for layer in self.values():
      feats.append(layer(feats))
    return torch.cat(feats, 1)


class DenseTransition(nn.Sequential):
  """BatchNorm (no activation) -> 1x1 conv -> optional 2x2 avg-pool."""

  def __init__(self, in_ch: int, out_ch: int, pool: bool):
    super().__init__()
    self.add_module("norm", nn.BatchNorm2d(in_ch))
    self.add_module("conv", nn.Conv2d(in_ch, out_ch, 1, bias=False))
    if pool:
      self.add_module("pool", nn.AvgPool2d(2, 2))


class Tokenizer(nn.Module):
  def __init__(self, embed_dim: int, image_size: int):
    super().__init__()
    last_pool = image_size // 112 != 1
    self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1),
                              nn.MaxPool2d(3, 2, 1))
    self.stage = nn.Sequential(
        DenseBlock(64), DenseTransition(160, 128, True),
        DenseBlock(128), DenseTransition(224, 128, True),
        DenseBlock(128), DenseTransition(224, 128, last_pool))
    self.transition = nn.Conv2d(128, embed_dim, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.transition(self.stage(self.stem(x)))
    return x.flatten(2).transpose(1, 2)


class VisualTokens(nn.Module):
  def __init__(self, embed_dim: int, image_size: int):
    super().__init__()
    self.tokens = Tokenizer(embed_dim, image_size)


class Attention(nn.Module):
  def __init__(self, dim: int, heads: int):
    super().__init__()
    self.heads = heads
    self.scale = (dim // heads) ** -0.5
    self.qkv = nn.Linear(dim, 3 * dim, bias=False)
    self.proj = nn.Linear(dim, dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
  def __init__(self, dim: int, hidden: int):
    super().__init__()
    self.fc1 = nn.Linear(dim, hidden)
    self.fc2 = nn.Linear(hidden, dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
  def __init__(self, dim: int, heads: int, mlp_ratio: float):
    super().__init__()
    self.norm1 = nn.LayerNorm(dim)
    self.attn = Attention(dim, heads)
    self.norm2 = nn.LayerNorm(dim)
    self.mlp = Mlp(dim, int(dim * mlp_ratio))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class MultiHeadPooling(nn.Module):
  """W_r: D -> 3Hw (third chunk unused); per head cross-covariance of Q, K,
  each centred by one scalar per (sample, head) slice."""

  def __init__(self, dim: int, heads: int, width: int):
    super().__init__()
    self.heads, self.width = heads, width
    self.wr = nn.Linear(dim, 3 * heads * width, bias=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    b, n, _ = x.shape
    qk = self.wr(x).reshape(b, n, 3, self.heads, self.width)
    qk = qk.permute(2, 0, 3, 1, 4)
    q = qk[0].reshape(b * self.heads, n, self.width)
    k = qk[1].reshape(b * self.heads, n, self.width)
    # The reference's _remove_mean: adaptive_avg_pool2d of a 3-D tensor
    # averages its last two axes.
    q = q - F.adaptive_avg_pool2d(q.transpose(-1, -2), (1, 1)).transpose(
        -1, -2)
    k = k - F.adaptive_avg_pool2d(k.transpose(-1, -2), (1, 1)).transpose(
        -1, -2)
    cov = q.transpose(-1, -2) @ k / n
    return cov.reshape(b, -1)


class Classifier(nn.Module):
  def __init__(self, num_classes: int, dim: int, heads: int, width: int):
    super().__init__()
    self.representation = MultiHeadPooling(dim, heads, width)
    self.visual_fc = nn.Linear(heads * width ** 2, num_classes)
    self.cls_fc = nn.Linear(dim, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return (self.cls_fc(x[:, 0])
            + self.visual_fc(self.representation(x[:, 1:])))


def sinusoid(n: int, d: int) -> torch.Tensor:
  angle = np.array([[p / np.power(10000, 2 * (j // 2) / d) for j in range(d)]
                    for p in range(n)])
  angle[:, 0::2] = np.sin(angle[:, 0::2])
  angle[:, 1::2] = np.cos(angle[:, 1::2])
  return torch.FloatTensor(angle).unsqueeze(0)


class Vit(nn.Module):
  def __init__(self, embed_dim: int, depth: int, num_heads: int,
               mlp_ratio: float, cov_heads: int, cov_dim: int,
               num_classes: int, image_size: int):
    super().__init__()
    self.visual_tokens = VisualTokens(embed_dim, image_size)
    self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio)
                                 for _ in range(depth)])
    self.classifier = Classifier(num_classes, embed_dim, cov_heads, cov_dim)
    grid = image_size // (16 if image_size // 112 != 1 else 8)
    self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
    self.pos_embed = nn.Parameter(sinusoid(grid * grid + 1, embed_dim),
                                  requires_grad=False)
    self.norm = nn.LayerNorm(embed_dim)
    for m in self.modules():
      if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
          nn.init.zeros_(m.bias)
    nn.init.trunc_normal_(self.cls_token, std=0.02)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.visual_tokens.tokens(x)
    x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
    x = x + self.pos_embed
    for block in self.blocks:
      x = block(x)
    return self.classifier(self.norm(x))


def build(embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
          cov_heads: int, cov_dim: int, num_classes: int = 1000,
          image_size: int = 224) -> Vit:
  return Vit(embed_dim, depth, num_heads, mlp_ratio, cov_heads, cov_dim,
             num_classes, image_size)


def randomize(model: nn.Module, seed: int) -> nn.Module:
  """Every trainable parameter N(0, 0.1^2)-ish and BN statistics random, so
  that no zero bias or unit scale hides a wrong mapping."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name != "pos_embed":
        p.copy_(torch.randn(p.shape, generator=gen) * 0.1
                + (1.0 if name.endswith("norm.weight") else 0.0))
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.running_mean.copy_(torch.randn(m.running_mean.shape,
                                         generator=gen) * 0.1)
        m.running_var.copy_(torch.rand(m.running_var.shape,
                                       generator=gen) + 0.5)
  return model
