"""Optimisers of the GCP training recipes with PyTorch's update rules.

Synopsis:
  schedule = create_lr_schedule(config.schedule, base_lr, steps_per_epoch,
                                num_epochs)
  tx = create_optimizer(config.optimizer, schedule)
  opt_state = tx.init(params)
  logging.info(describe_optimizer(params, config.optimizer))

Config fields (`config.name` is "sgd" or "adamw"):

  weight_decay    wd (both; required)
  momentum        mu (sgd; required)
  nesterov        Nesterov momentum (sgd; default False)
  b1, b2, eps     Adam constants (adamw; default 0.9, 0.999, 1e-8, PyTorch's)
  no_decay        rules: params matching any get no weight decay (default ())
  lr_multipliers  (rule, k) pairs: the first rule a param matches multiplies
                  its lr by k; unmatched params get k = 1 (default ())

Fields of the other optimiser may be present (so one config can switch with
--config.optimizer.name) and are then ignored; `describe_optimizer` lists
them. Any other field is an error.

A rule is a regular expression that must match a parameter's whole
'/'-joined path (`re.fullmatch`; paths look like "layer1/block0/bn1/scale",
"head/fc/kernel", "block0/attn/query/bias", "cls_token"), or a preset:

  NO_DECAY_BN_AND_BIAS = "@bn_and_bias"  scale and bias of normalisation
      layers (modules named bn*, *_bn or norm*) and every `bias`: the
      MindSpore TPAMI recipe's "no decay on gamma / beta / bias"
      (docs/method.md §8.5).
  NO_DECAY_1D = "@1d"  params with at most one dimension and every `bias`:
      timm's `filter_bias_and_bn` of the DropCov DeiT recipe
      (docs/method.md §8.5).
      Dimensions are those of the Flax array, so the 2-D (heads, head_dim)
      query/key/value biases count as biases, and the ECA kernel
      (`eca_conv`, shape (k,) here, (1, 1, k) in PyTorch) counts as 1-D.

A rule that matches no parameter is an error (at `tx.init`), so a typo cannot
silently leave the recipe unchanged; config mistakes raise `ConfigError` (a
ValueError). k = 0 freezes the matched params (e.g. DeiT's `pos_embed`, which
the DropCov reference does not train).

Update rules, per parameter p with gradient g, lr = schedule(step) * k and
wd replaced by 0 where `no_decay` matches:

  sgd    = torch.optim.SGD(lr, momentum=mu, weight_decay=wd, nesterov=...):
           g <- g + wd p;  buf <- mu buf + g (buf = g at the first step);
           d = g + mu buf if nesterov else buf;  p <- p - lr d.
           Coupled L2 before the momentum, as in every GCP CNN recipe
           (docs/design.md, 'Weight decay': decay on all params unless
           `no_decay` says).
  adamw  = torch.optim.AdamW(lr, betas=(b1, b2), eps, weight_decay=wd):
           p <- p - lr wd p;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
           p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).

A multiplier k is a PyTorch param group whose lr is k times the schedule's
(fast-MPN-COV's `classifier_factor`: lr_multipliers = (("head/fc/.*", 5.0),)).
Both rules are linear in lr, so the group is exactly the update scaled by k.
"""

import math
import numbers
import re
import types
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import ml_collections
import numpy as np
import optax

from gcp_jax.errors import ConfigError
from gcp_jax.train.config_check import FieldSpec, config_fields

PyTree = Any

NO_DECAY_BN_AND_BIAS = "@bn_and_bias"
NO_DECAY_1D = "@1d"

_BIAS = re.compile(r"(.*/)?bias")
_NORM_PARAM = re.compile(r"(.*/)?(bn[^/]*|[^/]*_bn|norm[^/]*)/(scale|bias)")

# A rule decides from a parameter's path and shape.
Rule = Callable[[str, tuple[int, ...]], bool]

PRESETS: Mapping[str, Rule] = types.MappingProxyType({
    NO_DECAY_BN_AND_BIAS: lambda path, shape: bool(
        _NORM_PARAM.fullmatch(path) or _BIAS.fullmatch(path)),
    NO_DECAY_1D: lambda path, shape: len(shape) <= 1 or bool(
        _BIAS.fullmatch(path)),
})

_COMMON = types.MappingProxyType({"no_decay": (), "lr_multipliers": ()})
OPTIMIZERS: Mapping[str, FieldSpec] = types.MappingProxyType({
    "sgd": FieldSpec(("weight_decay", "momentum"),
                     {"nesterov": False, **_COMMON}),
    "adamw": FieldSpec(("weight_decay",),
                       {"b1": 0.9, "b2": 0.999, "eps": 1e-8, **_COMMON}),
})


def _path(key_path: tuple[Any, ...]) -> str:
  return jax.tree_util.keystr(key_path, simple=True, separator="/")


def param_paths(tree: PyTree) -> PyTree:
  """The tree with each leaf replaced by its '/'-joined path, e.g.
  "layer1/block0/bn1/scale" (the keys of `flax.traverse_util.flatten_dict(
  params, sep='/')`)."""
  return jax.tree_util.tree_map_with_path(lambda kp, _: _path(kp), tree)


def _compile_rule(rule: Any, field: str) -> Rule:
  if not isinstance(rule, str):
    raise ConfigError(f"{field}: a rule is a regex or a preset name, got "
                      f"{rule!r}.")
  if rule.startswith("@"):
    if rule not in PRESETS:
      raise ConfigError(f"{field}: unknown preset {rule!r}; presets: "
                        f"{', '.join(PRESETS)}.")
    return PRESETS[rule]
  try:
    pattern = re.compile(rule)
  except re.error as e:
    raise ConfigError(f"{field}: invalid regex {rule!r}: {e}.") from e
  return lambda path, shape: bool(pattern.fullmatch(path))


class ParamGroups(NamedTuple):
  """Per-leaf weight-decay flags and lr multipliers, two trees like params."""
  decay: PyTree
  multiplier: PyTree


class _GroupRules:
  """`no_decay` and `lr_multipliers` compiled; `groups(tree)` applies them."""

  def __init__(self, no_decay: Sequence[str],
               lr_multipliers: Sequence[tuple[str, float]]):
    if isinstance(no_decay, str) or isinstance(lr_multipliers, str):
      raise ConfigError("no_decay and lr_multipliers are tuples, e.g. "
                        "('@1d',) and (('head/fc/.*', 5.0),).")
    self.no_decay = [(r, _compile_rule(r, "no_decay")) for r in no_decay]
    self.multipliers = []
    for entry in lr_multipliers:
      if (not isinstance(entry, Sequence) or len(entry) != 2
          or not isinstance(entry[1], numbers.Real)
          or isinstance(entry[1], bool) or not 0 <= entry[1] < np.inf):
        raise ConfigError(f"lr_multipliers: entries are (rule, factor >= 0) "
                          f"pairs, got {entry!r}.")
      self.multipliers.append(
          (entry[0], _compile_rule(entry[0], "lr_multipliers"),
           float(entry[1])))

  def groups(self, tree: PyTree) -> ParamGroups:
    """Decay flags and multipliers of every leaf of `tree` (params or
    updates); raises if a rule matches no leaf."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    leaves = [(_path(kp), tuple(np.shape(x))) for kp, x in flat]
    rules = ([("no_decay", r, f) for r, f in self.no_decay]
             + [("lr_multipliers", r, f) for r, f, _ in self.multipliers])
    unused = [f"{field} {r!r}" for field, r, f in rules
              if not any(f(p, s) for p, s in leaves)]
    if unused:
      examples = ", ".join(p for p, _ in leaves[:4])
      raise ConfigError(f"No parameter matches {'; '.join(unused)} (rules "
                        f"match the whole path, e.g. {examples}).")
    decay = [not any(f(p, s) for _, f in self.no_decay) for p, s in leaves]
    multiplier = [next((k for _, f, k in self.multipliers if f(p, s)), 1.0)
                  for p, s in leaves]
    return ParamGroups(jax.tree.unflatten(treedef, decay),
                       jax.tree.unflatten(treedef, multiplier))


def _scale_by_multipliers(rules: _GroupRules) -> optax.GradientTransformation:
  """Multiplies each leaf's update by its lr multiplier (stateless)."""

  def update_fn(updates, state, params=None):
    del params
    factors = rules.groups(updates).multiplier
    return jax.tree.map(lambda u, k: u if k == 1.0 else u * k,
                        updates, factors), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def _check_hyperparameters(name: str, fields: dict[str, Any]) -> None:
  def real(key: str, low: float, high: float = np.inf) -> None:
    value = fields[key]
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
        or not low <= value < high):
      raise ConfigError(f"{name}: {key} must be in [{low}, {high}), got "
                        f"{value!r}.")

  real("weight_decay", 0.0)
  if name == "sgd":
    real("momentum", 0.0, 1.0)
    if not isinstance(fields["nesterov"], bool):
      raise ConfigError(f"sgd: nesterov must be a bool, got "
                        f"{fields['nesterov']!r}.")
    if fields["nesterov"] and fields["momentum"] == 0:
      raise ConfigError("sgd: nesterov needs momentum > 0 (as in PyTorch).")
  else:
    real("b1", 0.0, 1.0)
    real("b2", 0.0, 1.0)
    real("eps", 0.0)


def create_optimizer(config: ml_collections.ConfigDict,
                     schedule: optax.Schedule) -> optax.GradientTransformation:
  """SGD or AdamW with PyTorch semantics, decay masks and lr multipliers.

  Args:
    config: fields as in the module docstring.
    schedule: update count -> lr (`gcp_jax.train.schedules`).

  Returns:
    The optax transformation; its updates are added to the params
    (`optax.apply_updates`).
  """
  name, fields = config_fields(config, "optimizer", OPTIMIZERS)
  _check_hyperparameters(name, fields)
  rules = _GroupRules(fields["no_decay"], fields["lr_multipliers"])
  decay = optax.add_decayed_weights(
      fields["weight_decay"], mask=lambda tree: rules.groups(tree).decay)
  if name == "sgd":
    core = [decay, optax.trace(fields["momentum"], fields["nesterov"])]
  else:
    core = [optax.scale_by_adam(fields["b1"], fields["b2"], fields["eps"]),
            decay]
  return optax.chain(*core, optax.scale_by_learning_rate(schedule),
                     _scale_by_multipliers(rules))


def param_groups(params: PyTree,
                 config: ml_collections.ConfigDict) -> ParamGroups:
  """Which params `config` decays and their lr multipliers (the masks the
  optimiser applies), for a params tree or its `jax.eval_shape`."""
  _, fields = config_fields(config, "optimizer", OPTIMIZERS)
  return _GroupRules(fields["no_decay"], fields["lr_multipliers"]).groups(
      params)


def describe_optimizer(params: PyTree,
                       config: ml_collections.ConfigDict) -> str:
  """The param groups PyTorch would have, for logs. For resnet18_isqrt:

    adamw: weight_decay=0.0001 b1=0.9 ... (ignored: momentum, nesterov)
      decay, lr x1:       21 tensors, 11,297,984 params (head/reduce/...)
      decay, lr x5:       1 tensors, 32,896,000 params (head/fc/kernel)
      no decay, lr x1:    42 tensors, 10,112 params (head/reduce/bn_...)
      no decay, lr x5:    1 tensors, 1,000 params (head/fc/bias)
  """
  name, fields = config_fields(config, "optimizer", OPTIMIZERS)
  groups = param_groups(params, config)
  members: dict[tuple[bool, float], list[tuple[str, int]]] = {}
  for path, decay, k, leaf in zip(
      jax.tree.leaves(param_paths(params)), jax.tree.leaves(groups.decay),
      jax.tree.leaves(groups.multiplier), jax.tree.leaves(params)):
    members.setdefault((decay, k), []).append(
        (path, math.prod(np.shape(leaf))))
  hyper = " ".join(f"{k}={v}" for k, v in fields.items())
  ignored = sorted(set(config.keys()) - set(fields) - {"name"})
  lines = [f"{name}: {hyper}"
           + (f" (ignored: {', '.join(ignored)})" if ignored else "")]
  for (decay, k), entries in sorted(members.items(), key=lambda g: (
      not g[0][0], g[0][1])):
    label = f"{'decay' if decay else 'no decay'}, lr x{k:g}:"
    paths = ", ".join(p for p, _ in entries[:3])
    lines.append(
        f"  {label:<19} {len(entries)} tensors, "
        f"{sum(n for _, n in entries):,} params "
        f"({paths}{', ...' if len(entries) > 3 else ''})")
  return "\n".join(lines)
