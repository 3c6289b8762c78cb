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

Layouts: conv (O, I, kh, kw) <-> (kh, kw, I, O); linear (out, in) <-> (in,
out); eca Conv1d (1, 1, k) <-> (k,). All are exact permutations/reshapes.

The FC acts on the triu vector in both code bases in the same order
(row-major upper triangle with diagonal, docs/method.md §5.1), so its weight
needs only the transpose.
"""

import dataclasses
import re
from typing import Callable

import numpy as np


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

FIELDS = {"stage": r"\d+", "block": r"\d+", "conv": r"conv\d+",
          "bn": r"bn\d+", "hidden": r"hidden\d+"}
# (canonical module, gcp-jax module) of every BatchNorm.
BN_MODULES = (
    ("bn1", "stem/bn1"),
    ("layer{stage}.{block}.{bn}", "layer{stage}/block{block}/{bn}"),
    ("layer{stage}.{block}.downsample.1", "layer{stage}/block{block}/"
     "downsample_bn"),
    ("layer_reduce_bn", "head/reduce/bn_reduce"),
    ("block{stage}.{bn}", "block{stage}/{bn}"),
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


def _compile(template: str) -> re.Pattern:
  """'layer{stage}.{block}' -> a regex with named groups."""
  parts = re.split(r"(\{\w+\})", template)
  return re.compile("".join(
      f"(?P<{p[1:-1]}>{FIELDS[p[1:-1]]})" if p.startswith("{")
      else re.escape(p) for p in parts))


_FORWARD = [(_compile(t), j, k) for t, j, k in RULES]
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
