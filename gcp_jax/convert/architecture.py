"""Recognise the network a set of weights belongs to, for error messages.

Works on gcp-jax paths -> shapes, so a checkpoint (after renaming) and a
model template are described the same way, e.g.

  ResNet-18 (BasicBlock 2-2-2-2, width 64, 7x7 stem), GCP head d=256,
  1000 classes  [create_model('resnet18_isqrt', 1000)]
"""

import dataclasses
import re
from typing import Mapping

from gcp_jax import model_config
from gcp_jax.models import registry, resnet

STEM = "params/stem/conv1/kernel"
FC = "params/head/fc/kernel"
REDUCE = "params/head/reduce/conv_reduce/kernel"
ECA = "params/head/eca_conv"


@dataclasses.dataclass(frozen=True)
class Architecture:
  """What the shapes say about a ResNet; None where they say nothing."""
  stages: tuple[int, ...]
  bottleneck: bool
  width: int | None
  stem_kernel: int | None
  head: str                  # 'gap', 'gcp', 'dropcov'
  dim: int | None            # d of the reduction block
  num_classes: int | None

  def backbone(self) -> tuple:
    """The fields that must agree for weights to fit a network."""
    return (self.stages, self.bottleneck, self.width, self.stem_kernel)

  def registry_call(self) -> str | None:
    """`create_model(...)` building this network, if a published name
    can."""
    block = resnet.Bottleneck if self.bottleneck else resnet.BasicBlock
    names = [n for n in model_config.RESNETS
             if _resnet_fields(n)["stage_sizes"] == self.stages
             and _resnet_fields(n)["block_cls"] is block]
    if not names or self.num_classes is None:
      return None
    backbone = names[0]
    head = {"gap": "gap", "gcp": "isqrt", "dropcov": "dropcov"}[self.head]
    name = f"{backbone}_{head}"
    if self.dim == 128 and f"{name}_d128" in model_config.PUBLISHED:
      name += "_d128"
    config, overrides = model_config.published_config(name), []
    if self.head != "gap" and self.dim != config.dim:
      overrides.append(f"dim={self.dim}")
    fields = _resnet_fields(backbone)
    if self.width not in (None, fields.get("width", 64)):
      overrides.append(f"width={self.width}")
    small_input = self.stem_kernel == 3
    if self.stem_kernel and small_input != fields.get("small_input", False):
      overrides.append(f"small_input={small_input}")
    args = ", ".join([repr(name), str(self.num_classes)] + overrides)
    return f"create_model({args})"

  def __str__(self) -> str:
    depth = sum(self.stages) * (3 if self.bottleneck else 2) + 2
    block = "Bottleneck" if self.bottleneck else "BasicBlock"
    stem = f"{self.stem_kernel}x{self.stem_kernel}" if self.stem_kernel else (
        "no")
    text = (f"ResNet-{depth} ({block} {'-'.join(map(str, self.stages))}, "
            f"width {self.width}, {stem} stem)")
    text += {"gap": ", GAP head", "gcp": f", GCP head d={self.dim}",
             "dropcov": f", DropCov head d={self.dim}"}[self.head]
    text += f", {self.num_classes} classes"
    call = self.registry_call()
    return text + (f"  [{call}]" if call else "")


def _resnet_fields(backbone: str) -> dict:
  """The fields a ResNet backbone entry fixes (stages, block, width...)."""
  return registry.BACKBONES[backbone].module.keywords


def describe(shapes: Mapping[str, tuple[int, ...]]) -> Architecture | None:
  """The Architecture of gcp-jax paths -> shapes; None if not a ResNet."""
  blocks: dict[int, set[int]] = {}
  for path in shapes:
    match = re.match(r"params/layer(\d+)/block(\d+)/", path)
    if match:
      blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
  if not blocks:
    return None
  stages = tuple(max(blocks.get(i, {-1})) + 1
                 for i in range(1, max(blocks) + 1))
  stem = shapes.get(STEM)
  fc = shapes.get(FC)
  head = "dropcov" if ECA in shapes else (
      "gcp" if REDUCE in shapes else "gap")
  return Architecture(
      stages=stages,
      bottleneck=any("/conv3/" in p for p in shapes),
      width=stem[-1] if stem else None,
      stem_kernel=stem[0] if stem else None,
      head=head,
      dim=shapes[REDUCE][-1] if REDUCE in shapes else None,
      num_classes=fc[-1] if fc and len(fc) == 2 else None)
