"""Backbones and heads by name, and `build_model(ModelConfig, num_classes)`.

  BACKBONES  name -> `Backbone`: a partial of the backbone module with its
             architecture fixed (stages, widths, depth), and whether it
             produces a feature map (B, H, W, C) or tokens (B, 1 + N, D).
  HEADS      name -> `Head`: a function building the head module from a
             `ModelConfig`, and the input it takes.

`build_model` looks up `config.backbone` and `config.head` (nothing else is
looked up by name; the representation is looked up by the head, in
`gcp_jax.ops.REPRESENTATIONS`), builds the head, and passes it to the
backbone with `config.backbone_options`. Adding a backbone or a head is one
entry here (docs/extending.md).

ResNets take `last_stride` from the head unless `backbone_options` sets it:
2 for GAP (the classification ResNet), 1 for the second-order heads (a
14 x 14 map at 224 px, as in iSQRT-COV and DropCov). Only backbones with a
`last_stride` field get it: VGG has no strided convolution. A backbone
entry may fix it for every head instead (`Backbone.last_stride`: MobileNetV2 and
ShuffleNetV2 keep 2, as GCP_Optimization's GCP variants do) and give the
head fields its reference sets (`Backbone.head_defaults`, e.g. the ReLU6
reduction block), which `head_options` override.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax.numpy as jnp
from flax import linen as nn

from gcp_jax import ops
from gcp_jax.model_config import ModelConfig
from gcp_jax.models import (dropcov_vit, heads, mobilenet_v2, resnet,
                            se_resnet, shufflenet_v2, token_heads, vgg,
                            vit)


@dataclasses.dataclass(frozen=True)
class Runtime:
  """How a model runs, as opposed to what it is: set by the training loop.

  Attributes:
    dtype: backbone compute dtype (heads compute in float32).
    bn_axis_name: mapped axis over which BatchNorm statistics are averaged
      (None: per-device statistics).
    rate_axis_name: mapped axis over which DropCov's rate is averaged
      (None: per-device rate, as the reference under DataParallel).
  """
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  rate_axis_name: str | None = None


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A backbone module with its architecture fixed.

  Attributes:
    module: callable(head=..., **fields) -> the Flax model.
    output: "map" (B, H, W, C) or "tokens" (B, 1 + N, D).
    last_stride: the default `last_stride` for every head; None: the head's
      (`Head.resnet_last_stride`).
    head_defaults: (field, value) pairs given to any head that has the
      field, unless `head_options` sets it.
  """
  module: Callable[..., nn.Module]
  output: str
  last_stride: int | None = None
  head_defaults: tuple[tuple[str, Any], ...] = ()


def _resnet(stage_sizes: tuple[int, ...], block: type[nn.Module],
            **fields: Any) -> Backbone:
  return Backbone(functools.partial(resnet.ResNet, stage_sizes=stage_sizes,
                                    block_cls=block, **fields), "map")


def _vit(**fields: Any) -> Backbone:
  return Backbone(functools.partial(vit.VisionTransformer, **fields),
                  "tokens")


def _dropcov_vit(**fields: Any) -> Backbone:
  return Backbone(functools.partial(dropcov_vit.DropCovViT, **fields),
                  "tokens")


BACKBONES: dict[str, Backbone] = {
    "resnet18": _resnet((2, 2, 2, 2), resnet.BasicBlock),
    "resnet34": _resnet((3, 4, 6, 3), resnet.BasicBlock),
    "resnet50": _resnet((3, 4, 6, 3), resnet.Bottleneck),
    "resnet101": _resnet((3, 4, 23, 3), resnet.Bottleneck),
    "resnet152": _resnet((3, 8, 36, 3), resnet.Bottleneck),
    # One BasicBlock per stage, width 8, 3x3 stem: 8x8..32x32 images, tests.
    "resnet_tiny": _resnet((1, 1, 1, 1), resnet.BasicBlock, width=8,
                           small_input=True),
    # The TPAMI seed's MindSpore SE-ResNet-50 ('same' padding).
    "se_resnet50": Backbone(functools.partial(
        se_resnet.SEResNet, stage_sizes=(3, 4, 6, 3)), "map"),
    "deit_t": _vit(embed_dim=192, depth=12, num_heads=3),
    "deit_s": _vit(embed_dim=384, depth=12, num_heads=6),
    # 32 px, patch 8, 2 blocks of width 32: tests.
    "deit_tiny_test": _vit(image_size=32, patch_size=8, embed_dim=32, depth=2,
                           num_heads=2),
    # VGG-16 with BatchNorm, without its fifth max-pool (fast-MPN-COV).
    "vgg16_bn": Backbone(functools.partial(vgg.VGG, blocks=vgg.VGG16), "map"),
    # DropCov's transformer (conv tokenizer, sinusoid positions): its
    # Deit_drop_{Tiny,Small,Base} (Transformers/src/transformer.py).
    "deit_drop_tiny": _dropcov_vit(embed_dim=240, depth=12, num_heads=4,
                                   mlp_ratio=2.5),
    "deit_drop_small": _dropcov_vit(embed_dim=384, depth=12, num_heads=6),
    "deit_drop_base": _dropcov_vit(embed_dim=768, depth=12, num_heads=12),
    # 64 px (4 x 4 tokens), 2 blocks of width 32: tests.
    "deit_drop_tiny_test": _dropcov_vit(image_size=64, embed_dim=32, depth=2,
                                        num_heads=2, mlp_ratio=2.5),
    # GCP_Optimization src/models/MobileNetV2*.py, ShuffleNetV2*.py: no
    # stride change for GCP (7 x 7 at 224 px), a ReLU6 reduction block, and
    # (MobileNetV2) Dropout(0.2) before the FC of both heads.
    "mobilenet_v2": Backbone(mobilenet_v2.MobileNetV2, "map", last_stride=2,
                             head_defaults=(("activation", "relu6"),
                                            ("dropout_rate", 0.2))),
    "shufflenet_v2": Backbone(shufflenet_v2.ShuffleNetV2, "map",
                              last_stride=2,
                              head_defaults=(("activation", "relu6"),)),
}


def representation_options(config: ModelConfig) -> tuple[tuple[str, Any],
                                                          ...]:
  """The normalisation's keyword options: `num_iters` where the
  representation takes it, then `config.representation_options`."""
  rep = ops.get_representation(config.representation)
  options = dict(config.representation_options)
  if rep.takes_num_iters:
    options.setdefault("num_iters", config.num_iters)
  elif config.num_iters != ModelConfig.num_iters:
    raise ValueError(
        f"num_iters={config.num_iters} is the Newton-Schulz count of the "
        f"isqrt representation; {config.representation!r} does not take it "
        f"(set its own options in representation_options).")
  return tuple(sorted(options.items()))


def _gap(config: ModelConfig, num_classes: int, run: Runtime) -> nn.Module:
  return heads.GAPHead(num_classes, **dict(config.head_options))


def _gcp(config: ModelConfig, num_classes: int, run: Runtime) -> nn.Module:
  return heads.GCPHead(num_classes, dim=config.dim,
                       representation=config.representation,
                       representation_options=representation_options(config),
                       bn_axis_name=run.bn_axis_name,
                       **dict(config.head_options))


def _dropcov(config: ModelConfig, num_classes: int,
             run: Runtime) -> nn.Module:
  return heads.DropCovHead(num_classes, dim=config.dim,
                           rate_axis_name=run.rate_axis_name,
                           bn_axis_name=run.bn_axis_name,
                           **dict(config.head_options))


def _cls(config: ModelConfig, num_classes: int, run: Runtime) -> nn.Module:
  return token_heads.ClsHead(num_classes, **dict(config.head_options))


def _token_gcp(config: ModelConfig, num_classes: int,
               run: Runtime) -> nn.Module:
  return token_heads.TokenGCPHead(
      num_classes, dim=config.dim, representation=config.representation,
      representation_options=representation_options(config),
      **dict(config.head_options))


def _token_dropcov(config: ModelConfig, num_classes: int,
                   run: Runtime) -> nn.Module:
  return token_heads.TokenDropCovHead(num_classes,
                                      **dict(config.head_options))


@dataclasses.dataclass(frozen=True)
class Head:
  """A head: its module, how to build it from a config, the backbone output
  it takes and, on ResNets, the stride of layer4 it expects."""
  module: type[nn.Module]
  build: Callable[[ModelConfig, int, Runtime], nn.Module]
  input: str
  resnet_last_stride: int = 1


HEADS: dict[str, Head] = {
    "gap": Head(heads.GAPHead, _gap, "map", resnet_last_stride=2),
    "gcp": Head(heads.GCPHead, _gcp, "map"),
    "dropcov": Head(heads.DropCovHead, _dropcov, "map"),
    "cls": Head(token_heads.ClsHead, _cls, "tokens"),
    "token_gcp": Head(token_heads.TokenGCPHead, _token_gcp, "tokens"),
    "token_dropcov": Head(token_heads.TokenDropCovHead, _token_dropcov,
                          "tokens"),
}

# Module fields that `build_model` sets from the config's own fields or the
# runtime; an options mapping may not set them.
SET_BY_BUILD = frozenset({"parent", "name", "head", "num_classes", "dim",
                          "representation", "representation_options",
                          "dtype", "bn_axis_name", "rate_axis_name"})


def _lookup(table: dict[str, Any], key: str, what: str) -> Any:
  if key not in table:
    raise ValueError(f"Unknown {what} {key!r}; valid names are: "
                     f"{', '.join(sorted(table))}.")
  return table[key]


def option_names(module: Callable[..., nn.Module]) -> set[str]:
  """The fields of a backbone or head module an options mapping may set."""
  cls = module.func if isinstance(module, functools.partial) else module
  return {f.name for f in dataclasses.fields(cls)} - SET_BY_BUILD


def _check_options(module: Callable[..., nn.Module], given: dict[str, Any],
                   what: str) -> None:
  unknown = sorted(set(given) - option_names(module))
  if unknown:
    valid = ", ".join(sorted(option_names(module))) or "none"
    raise ValueError(f"Unknown {what} {', '.join(unknown)}; valid: {valid}.")


def build_model(config: ModelConfig, num_classes: int,
                runtime: Runtime = Runtime()) -> nn.Module:
  """The Flax model of `config` with `num_classes` outputs.

  Returns an unbound module; `init(rngs, images, train=False)` it. Images
  are (B, H, W, 3); logits (B, num_classes) float32.
  """
  backbone = _lookup(BACKBONES, config.backbone, "backbone")
  head = _lookup(HEADS, config.head, "head")
  if head.input != backbone.output:
    valid = sorted(k for k, h in HEADS.items() if h.input == backbone.output)
    raise ValueError(
        f"Head {config.head!r} takes {head.input} features; backbone "
        f"{config.backbone!r} gives {backbone.output}: use one of "
        f"{', '.join(valid)}.")
  _check_options(head.module, dict(config.head_options), "head_options")
  defaults = {k: v for k, v in backbone.head_defaults
              if k in option_names(head.module)}
  if defaults:
    config = config.replace(
        head_options={**defaults, **dict(config.head_options)})
  if runtime.rate_axis_name is not None and config.head != "dropcov":
    raise ValueError(f"A global DropCov rate (rate_axis_name) needs the "
                     f"'dropcov' head, not {config.head!r}.")
  fields = dict(config.backbone_options)
  _check_options(backbone.module, fields, "backbone_options")
  fields["dtype"] = runtime.dtype
  if backbone.output == "map" and "last_stride" in option_names(
      backbone.module):
    fields.setdefault("last_stride", backbone.last_stride
                      or head.resnet_last_stride)
  # DeiT normalises with LayerNorm only; DropCov's tokenizer has BatchNorm.
  cls = getattr(backbone.module, "func", backbone.module)
  if "bn_axis_name" in {f.name for f in dataclasses.fields(cls)}:
    fields["bn_axis_name"] = runtime.bn_axis_name
  return backbone.module(head=head.build(config, num_classes, runtime),
                         **fields)
