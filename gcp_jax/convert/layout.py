"""Canonical (fast-MPN-COV / torchvision) names <-> gcp-jax variable paths,
with the array layout change of each kind of weight.

  canonical                        gcp-jax path                     layout
  conv1.weight                     params/stem/conv1/kernel         conv
  bn1.weight / .bias               params/stem/bn1/scale / bias
  bn1.running_mean / .running_var  batch_stats/stem/bn1/mean / var
  layer{i}.{j}.conv{k}.weight      params/layer{i}/block{j}/conv{k}/kernel
  layer{i}.{j}.bn{k}.*             .../layer{i}/block{j}/bn{k}/*
  layer{i}.{j}.downsample.0.weight .../block{j}/downsample_conv/kernel
  layer{i}.{j}.downsample.1.*      .../layer{i}/block{j}/downsample_bn/*
  layer_reduce.weight              params/head/reduce/conv_reduce/kernel
  layer_reduce_bn.*                .../head/reduce/bn_reduce/*
  eca_layer.conv.weight            params/head/eca_conv             eca
  fc.weight / fc.bias              params/head/fc/kernel / bias     linear
  block{i}.conv{j}.weight / .bias  params/block{i}/conv{j}/kernel   conv
                                   / bias (VGG)
  block{i}.bn{j}.*                 .../block{i}/bn{j}/* (VGG)
  hidden{n}.weight / .bias         params/head/hidden{n}/kernel     linear
                                   / bias (VGG classifier)

DropCov's transformer (`Deit_drop_*`, `gcp_jax.models.dropcov_vit`) keeps
its own names as canonical (prefix `visual_tokens.tokens.` written `vt.`):

  vt.stem.0.weight / .bias         params/tokenizer/stem/kernel / bias
  vt.stage.{s}.denselayer{l}.conv{k}.weight
           params/tokenizer/stage{s}_denselayer{l}_conv{k}/kernel
  vt.stage.{s}.norm.*              .../tokenizer/stage{s}_norm/*  (BatchNorm)
  vt.stage.{s}.conv.weight         params/tokenizer/stage{s}_conv/kernel
  vt.transition.weight / .bias     params/tokenizer/proj/kernel / bias
  cls_token                        params/cls_token                 token
  blocks.{b}.norm{k}.* / norm.*    params/block{b}/norm{k}/* / params/norm/*
  blocks.{b}.attn.{qkv,proj}.*     params/block{b}/attn/{qkv,proj}/*
  blocks.{b}.mlp.fc{k}.*           params/block{b}/mlp_fc{k}/*
  classifier.representation.wr.weight  params/head/reduce/kernel
  classifier.visual_fc.*           params/head/fc/*
  classifier.cls_fc.*              params/head/fc_cls/*

GCP_Optimization's MobileNetV2 / ShuffleNetV2 and the seed's SE-ResNet
keep their own names as canonical too (import only: `canonical_name`, and
so export, does not know them; `{BN}.*` is a BatchNorm's four variables):

  features.0.{0,1}.*               params/stem/conv / stem/bn (MobileNetV2)
  features.1.conv.{0.0,0.1,1,2}.*  .../block0/{depthwise/conv,
                                   depthwise/bn, project_conv, project_bn}
  features.{k}.conv.{0.0,0.1,1.0,1.1,2,3}.*  (k = 2..17)
           .../block{k-1}/{expand/conv, expand/bn, depthwise/conv,
                           depthwise/bn, project_conv, project_bn}
  features.18.{0,1}.*              .../conv_last/{conv,bn}
  classifier.1.weight / .bias      params/head/fc/kernel / bias     linear
  conv1.{0,1}.* / conv5.{0,1}.*    .../stem/{conv,bn} / .../conv5/{conv,bn}
                                   (ShuffleNetV2; classifier `fc`)
  stage{s}.{u}.branch1.{0,1,2,3}.* .../stage{s}/unit{u}/branch1_{dw,dw_bn,
                                   pw,pw_bn}
  stage{s}.{u}.branch2.{0,1,3,4,5,6}.*  .../stage{s}/unit{u}/branch2_{pw1,
                                   pw1_bn,dw,dw_bn,pw2,pw2_bn}
  dimension_reduction.{0,1}.*      .../head/reduce/{conv_reduce,bn_reduce}
  conv1_{i}.weight, bn1_{i}.*      .../stem/conv1_{i}, .../stem/bn1_{i}
                                   (SE-ResNet, i = 0, 1, 2)
  layer{i}.{j}.se_dense_{n}.*      params/layer{i}/block{j}/se/se_dense_{n}/
                                   kernel / bias                    linear
  (SE-ResNet blocks otherwise use the ResNet rules above, naming.py.)

(LayerNorm weight -> scale; Linear weights linear.) The fixed `pos_embed`
is not a variable in gcp-jax (`naming.canonical_from_torch` checks and
skips it).

Layouts: conv (O, I, kh, kw) <-> (kh, kw, I, O); linear (out, in) <-> (in,
out); eca Conv1d (1, 1, k) <-> (k,); token (1, 1, D) unchanged. All are
exact permutations/reshapes.

The FC acts on the triu vector in both code bases in the same order
(row-major upper triangle with diagonal, docs/method.md §5.1), so its weight
needs only the transpose.
"""

import dataclasses
import re
from typing import Callable

import numpy as np

from gcp_jax.models import mobilenet_v2


@dataclasses.dataclass(frozen=True)
class Kind:
  """How one kind of weight is laid out in each code base."""
  name: str
  torch_ndim: int
  to_jax: Callable[[np.ndarray], np.ndarray]
  to_torch: Callable[[np.ndarray], np.ndarray]


CONV = Kind("conv", 4, lambda a: a.transpose(2, 3, 1, 0),
            lambda a: a.transpose(3, 2, 0, 1))
LINEAR = Kind("linear", 2, lambda a: a.T, lambda a: a.T)
VECTOR = Kind("vector", 1, lambda a: a, lambda a: a)
ECA = Kind("eca", 3, lambda a: a.reshape(-1),
           lambda a: a.reshape(1, 1, -1))
TOKEN = Kind("token", 3, lambda a: a, lambda a: a)

FIELDS = {"stage": r"\d+", "block": r"\d+", "conv": r"conv\d+",
          "bn": r"bn\d+", "hidden": r"hidden\d+", "layer": r"\d+",
          "ln": r"norm\d", "fc": r"fc\d", "proj": r"qkv|proj"}
# (canonical module, gcp-jax module) of every BatchNorm.
BN_MODULES = (
    ("bn1", "stem/bn1"),
    ("layer{stage}.{block}.{bn}", "layer{stage}/block{block}/{bn}"),
    ("layer{stage}.{block}.downsample.1", "layer{stage}/block{block}/"
     "downsample_bn"),
    ("layer_reduce_bn", "head/reduce/bn_reduce"),
    ("block{stage}.{bn}", "block{stage}/{bn}"),
    ("visual_tokens.tokens.stage.{stage}.norm", "tokenizer/stage{stage}_norm"),
)
# (canonical suffix, collection, gcp-jax leaf) of a BatchNorm's variables.
BN_VARIABLES = (("weight", "params", "scale"), ("bias", "params", "bias"),
                ("running_mean", "batch_stats", "mean"),
                ("running_var", "batch_stats", "var"))
RULES = [
    ("conv1.weight", "params/stem/conv1/kernel", CONV),
    ("layer{stage}.{block}.{conv}.weight",
     "params/layer{stage}/block{block}/{conv}/kernel", CONV),
    ("layer{stage}.{block}.downsample.0.weight",
     "params/layer{stage}/block{block}/downsample_conv/kernel", CONV),
    ("layer_reduce.weight", "params/head/reduce/conv_reduce/kernel", CONV),
    ("eca_layer.conv.weight", "params/head/eca_conv", ECA),
    ("fc.weight", "params/head/fc/kernel", LINEAR),
    ("fc.bias", "params/head/fc/bias", VECTOR),
    ("block{stage}.{conv}.weight", "params/block{stage}/{conv}/kernel", CONV),
    ("block{stage}.{conv}.bias", "params/block{stage}/{conv}/bias", VECTOR),
    ("{hidden}.weight", "params/head/{hidden}/kernel", LINEAR),
    ("{hidden}.bias", "params/head/{hidden}/bias", VECTOR),
] + [(f"{torch_mod}.{suffix}", f"{collection}/{jax_mod}/{leaf}", VECTOR)
     for torch_mod, jax_mod in BN_MODULES
     for suffix, collection, leaf in BN_VARIABLES]
_VT = "visual_tokens.tokens"
# DropCov's transformer (module docstring).
RULES += [
    (f"{_VT}.stem.0.weight", "params/tokenizer/stem/kernel", CONV),
    (f"{_VT}.stem.0.bias", "params/tokenizer/stem/bias", VECTOR),
    (f"{_VT}.stage.{{stage}}.denselayer{{layer}}.{{conv}}.weight",
     "params/tokenizer/stage{stage}_denselayer{layer}_{conv}/kernel", CONV),
    (f"{_VT}.stage.{{stage}}.conv.weight",
     "params/tokenizer/stage{stage}_conv/kernel", CONV),
    (f"{_VT}.transition.weight", "params/tokenizer/proj/kernel", CONV),
    (f"{_VT}.transition.bias", "params/tokenizer/proj/bias", VECTOR),
    ("cls_token", "params/cls_token", TOKEN),
    ("blocks.{block}.{ln}.weight", "params/block{block}/{ln}/scale", VECTOR),
    ("blocks.{block}.{ln}.bias", "params/block{block}/{ln}/bias", VECTOR),
    ("norm.weight", "params/norm/scale", VECTOR),
    ("norm.bias", "params/norm/bias", VECTOR),
    ("blocks.{block}.attn.{proj}.weight",
     "params/block{block}/attn/{proj}/kernel", LINEAR),
    ("blocks.{block}.attn.proj.bias", "params/block{block}/attn/proj/bias",
     VECTOR),
    ("blocks.{block}.mlp.{fc}.weight", "params/block{block}/mlp_{fc}/kernel",
     LINEAR),
    ("blocks.{block}.mlp.{fc}.bias", "params/block{block}/mlp_{fc}/bias",
     VECTOR),
    ("classifier.representation.wr.weight", "params/head/reduce/kernel",
     LINEAR),
    ("classifier.visual_fc.weight", "params/head/fc/kernel", LINEAR),
    ("classifier.visual_fc.bias", "params/head/fc/bias", VECTOR),
    ("classifier.cls_fc.weight", "params/head/fc_cls/kernel", LINEAR),
    ("classifier.cls_fc.bias", "params/head/fc_cls/bias", VECTOR),
]


def _conv(torch_mod: str, jax_mod: str) -> list:
  """A bias-free convolution `torch_mod` at `params/{jax_mod}/kernel`."""
  return [(f"{torch_mod}.weight", f"params/{jax_mod}/kernel", CONV)]


def _bn(torch_mod: str, jax_mod: str) -> list:
  """The four variables of a BatchNorm `torch_mod` at `jax_mod`."""
  return [(f"{torch_mod}.{suffix}", f"{collection}/{jax_mod}/{leaf}", VECTOR)
          for suffix, collection, leaf in BN_VARIABLES]


def _linear(torch_mod: str, jax_mod: str) -> list:
  return [(f"{torch_mod}.weight", f"params/{jax_mod}/kernel", LINEAR),
          (f"{torch_mod}.bias", f"params/{jax_mod}/bias", VECTOR)]


def _conv_bn(torch_mod: str, jax_mod: str) -> list:
  """`torch_mod.{0,1}` = conv, BN -> `jax_mod/{conv,bn}`."""
  return (_conv(f"{torch_mod}.0", f"{jax_mod}/conv")
          + _bn(f"{torch_mod}.1", f"{jax_mod}/bn"))


def _mobilenet_block(k: int) -> list:
  """`features.{k}` (k = 1..17) -> `block{k - 1}`; the first block (t = 1)
  has no expansion, so its items sit one index earlier."""
  torch_mod, jax_mod = f"features.{k}.conv", f"block{k - 1}"
  first = 0 if k == 1 else 1
  rules = [] if k == 1 else _conv_bn(f"{torch_mod}.0", f"{jax_mod}/expand")
  return (rules + _conv_bn(f"{torch_mod}.{first}", f"{jax_mod}/depthwise")
          + _conv(f"{torch_mod}.{first + 1}", f"{jax_mod}/project_conv")
          + _bn(f"{torch_mod}.{first + 2}", f"{jax_mod}/project_bn"))


_MOBILENET_BLOCKS = sum(n for _, _, n, _ in mobilenet_v2.INVERTED_RESIDUALS)
_REDUCTION = (_conv("dimension_reduction.0", "head/reduce/conv_reduce")
              + _bn("dimension_reduction.1", "head/reduce/bn_reduce"))
# ShuffleNetV2 branch Sequential index -> gcp-jax module (ReLUs between).
_SHUFFLE_BRANCHES = (
    ("branch1", (("0", "branch1_dw"), ("2", "branch1_pw"))),
    ("branch2", (("0", "branch2_pw1"), ("3", "branch2_dw"),
                 ("5", "branch2_pw2"))))
IMPORT_ONLY_RULES = (
    # MobileNetV2 (GCP_Optimization MobileNetV2*.py)
    _conv_bn("features.0", "stem")
    + [r for k in range(1, _MOBILENET_BLOCKS + 1) for r in _mobilenet_block(k)]
    + _conv_bn(f"features.{_MOBILENET_BLOCKS + 1}", "conv_last")
    + _linear("classifier.1", "head/fc")
    # ShuffleNetV2 (GCP_Optimization ShuffleNetV2*.py); classifier `fc`
    + _conv_bn("conv1", "stem") + _conv_bn("conv5", "conv5")
    + [r for branch, items in _SHUFFLE_BRANCHES for index, jax_mod in items
       for r in (
           _conv(f"stage{{stage}}.{{block}}.{branch}.{index}",
                 f"stage{{stage}}/unit{{block}}/{jax_mod}")
           + _bn(f"stage{{stage}}.{{block}}.{branch}.{int(index) + 1}",
                 f"stage{{stage}}/unit{{block}}/{jax_mod}_bn"))]
    + _REDUCTION
    # The seed's SE-ResNet (stem BN `bn1` is `bn1_2` here, naming.py)
    + [r for i in range(3) for r in (_conv(f"conv1_{i}", f"stem/conv1_{i}")
                                     + _bn(f"bn1_{i}", f"stem/bn1_{i}"))]
    + [r for i in range(2) for r in _linear(
        f"layer{{stage}}.{{block}}.se_dense_{i}",
        f"layer{{stage}}/block{{block}}/se/se_dense_{i}")])


def _compile(template: str) -> re.Pattern:
  """'layer{stage}.{block}' -> a regex with named groups."""
  parts = re.split(r"(\{\w+\})", template)
  return re.compile("".join(
      f"(?P<{p[1:-1]}>{FIELDS[p[1:-1]]})" if p.startswith("{")
      else re.escape(p) for p in parts))


_FORWARD = [(_compile(t), j, k)
            for t, j, k in RULES + list(IMPORT_ONLY_RULES)]
_BACKWARD = [(_compile(j), t, k) for t, j, k in RULES]


def jax_path(canonical: str) -> tuple[str, Kind] | None:
  """The gcp-jax path and layout kind of a canonical name, or None."""
  for pattern, target, kind in _FORWARD:
    match = pattern.fullmatch(canonical)
    if match:
      return target.format(**match.groupdict()), kind
  return None


def canonical_name(path: str) -> tuple[str, Kind] | None:
  """The canonical name and layout kind of a gcp-jax path, or None."""
  for pattern, target, kind in _BACKWARD:
    match = pattern.fullmatch(path)
    if match:
      return target.format(**match.groupdict()), kind
  return None
