"""Checks of training configs, run before anything is built.

  FieldSpec / config_fields   a config that picks one of several named
                              choices (`config.name`: a schedule, an
                              optimiser) against the fields of each choice
  check_training_config       the loop's own top-level fields (weight
                              average, best-checkpoint metric, extra
                              outputs, initialisation, smoothing style)

Every mistake raises `gcp_jax.errors.ConfigError` (a ValueError) with a
message that names the fix.

Synopsis:
  name, fields = config_fields(config.optimizer, "optimizer", OPTIMIZERS)
  check_training_config(config)
"""

import types
from typing import Any, Mapping, NamedTuple

import ml_collections

from gcp_jax.data.config import DataSettings
from gcp_jax.errors import ConfigError
from gcp_jax.ops.losses import SMOOTHING_STYLES
from gcp_jax.train.init_schemes import INIT_SCHEMES


class FieldSpec(NamedTuple):
  """Config fields of one named choice: required ones and optional defaults."""
  required: tuple[str, ...] = ()
  optional: Mapping[str, Any] = types.MappingProxyType({})


def config_fields(config: ml_collections.ConfigDict, kind: str,
                  specs: Mapping[str, FieldSpec]) -> tuple[str, dict[str, Any]]:
  """Checks `config` against the named choices in `specs`.

  `config.name` must be a key of `specs`, every other field must belong to
  some choice (so a typo is an error, while a config that keeps the fields of
  several choices, to switch with --config.X.name, is accepted), and the
  chosen one's required fields must be set (not None).

  Args:
    config: a ConfigDict with `name` and fields.
    kind: what is configured, for messages ("schedule", "optimizer").
    specs: name -> FieldSpec.

  Returns:
    (name, fields): the chosen name and its fields, defaults filled in.
  """
  name = config.get("name")
  if name not in specs:
    raise ConfigError(f"Unknown {kind} {name!r}; valid names: "
                      f"{', '.join(sorted(specs))}.")
  known = {f for s in specs.values() for f in (*s.required, *s.optional)}
  unknown = sorted(set(config.keys()) - known - {"name"})
  if unknown:
    raise ConfigError(f"Unknown {kind} field(s) {unknown}; valid fields: "
                      f"{', '.join(sorted(known))}.")
  spec = specs[name]
  missing = [f for f in spec.required if config.get(f) is None]
  if missing:
    raise ConfigError(f"{kind} {name!r} needs the field(s) {missing} "
                      f"(it uses: {', '.join(spec.required)}"
                      f"{''.join(f', [{o}]' for o in spec.optional)}).")
  fields = {f: config[f] for f in spec.required}
  fields.update({f: config.get(f, default)
                 for f, default in spec.optional.items()})
  return name, fields


def _check_choice(config: ml_collections.ConfigDict, key: str,
                  choices: tuple[str, ...]) -> None:
  if config[key] not in choices:
    raise ConfigError(f"config.{key}={config[key]!r}; use one of "
                      f"{', '.join(repr(c) for c in choices)}.")


def check_training_config(config: ml_collections.ConfigDict) -> None:
  """The training loop's fields `ema_decay`, `best_metric`,
  `extra_outputs`, `init_scheme` and `label_smoothing_style`."""
  if not 0.0 <= config.ema_decay < 1.0:
    raise ConfigError(
        f"config.ema_decay={config.ema_decay} must be in [0, 1) (0 = no "
        f"weight average; DeiT's 0.99996).")
  _check_choice(config, "best_metric", ("top1", "ema_top1"))
  if config.best_metric == "ema_top1" and not config.ema_decay:
    raise ConfigError(
        "config.best_metric='ema_top1' needs config.ema_decay > 0.")
  if config.extra_outputs < 0:
    raise ConfigError(
        f"config.extra_outputs={config.extra_outputs} must be >= 0 (1 for "
        f"the MindSpore recipe's 1001-way head over 1000 classes).")
  _check_choice(config, "init_scheme", INIT_SCHEMES)
  _check_choice(config, "label_smoothing_style", SMOOTHING_STYLES)
  if (config.label_smoothing_style != "uniform"
      and DataSettings.from_config(config.data).mixing):
    raise ConfigError(
        "Mixup / CutMix smooth their targets the 'uniform' way only; set "
        "config.label_smoothing_style='uniform' or turn mixing off.")
