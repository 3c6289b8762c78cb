"""Learning-rate schedules of the GCP training recipes (docs/method.md §8.4).

Synopsis:
  config = ml_collections.ConfigDict({"name": "lrfast"})
  schedule = create_lr_schedule(config, base_lr=0.1, steps_per_epoch=5004,
                                num_epochs=30)
  lr = schedule(step)              # jittable; step = number of updates done
  print(format_lr_table(schedule, 5004, 30))

`config.name` picks the schedule; its other fields are listed below. `base_lr`
and `num_epochs` are used exactly as given: unlike the reference scripts,
nothing is replaced by a per-architecture value. With e = step //
steps_per_epoch (0-based epoch) and b = base_lr:

  name               lr                                      fields
  constant           b
  step               b * gamma^#{m in milestones : m <= e}    milestones, gamma
  lrnorm             b * 0.1^floor(e / 30)
  lrfast             b * (1 - (E - 1) / 52)^11               [E = e; E = e + 1
  lradju             b * (1 - (E - 1) / 49)^2                 without reference_
                                                              epoch_artefact]
  mobilenet_lrnorm   b * 0.98^e
  mobilenet_lrfast   b * 0.92^e
  mobilenet_lradju   (b / 0.06) * piecewise linear in e through
                     (0, 0.06), (50, 0.01), (100, 1e-3), (150, 1e-5),
                     then 1e-5
  linear             b * (1 - t / T), per update: t = step,
                     T = steps_per_epoch * num_epochs, 0 after T
  cosine             timm warm-up + cosine + cooldown        warmup_epochs,
                     (see `_cosine`)                         warmup_lr, min_lr,
                                                             cooldown_epochs,
                                                             [per_step]

Fields in brackets are optional (default False). All schedules but `linear`
(and `cosine` with per_step) are constant within an epoch, as in the
reference scripts, which set the LR at the start of each epoch.

`step` with milestones (30, 45, 60), gamma 0.1, 65 epochs is fast-MPN-COV's
from-scratch recipe (docs/method.md §8.5); `lrnorm/lrfast/lradju` are the
GCP_Optimization ResNet schedules (§8.4; `lrnorm` = `step` every 30 epochs),
`mobilenet_*` its MobileNetV2 ones (reference b: 0.045, 0.06, 0.06),
`linear` its ShuffleNetV2 one, and `cosine` the DropCov DeiT one (§8.5).

LRfast / LRadju and the epoch-0 artefact (docs/design.md, 'Epoch artefact').
The paper writes the formulas for a 1-based epoch E; the reference code
evaluates them at the 0-based epoch, so its first epoch runs above the base
LR. Here:

  * default, `reference_epoch_artefact = True`: E = e, the reference code's
    values (docs/method.md §8.4). With b = 0.1:
      lrfast  e = 0: 0.1233, 1: 0.1, 2: 0.0808, 5: 0.0415, 10: 0.0124,
              15: 3.2e-3, 20: 6.7e-4, 25: 1.1e-4, 29: 2.0e-5
      lradju  e = 0: 0.1041, 1: 0.1, 10: 0.0666, 20: 0.0375, 30: 0.0167,
              40: 4.2e-3, 48: 1.7e-4, 49: 4.2e-5
  * `reference_epoch_artefact = False`: E = e + 1, the paper's formula.
    Epoch 0 trains at exactly b and epoch e at the reference's epoch-(e + 1)
    rate:
      lrfast  e = 0: 0.1, 1: 0.0808, 2: 0.0650, 5: 0.0329, 10: 9.5e-3,
              20: 4.8e-4, 29: 1.27e-5
      lradju  e = 0: 0.1, 1: 0.0960, 10: 0.0633, 20: 0.0350, 30: 0.0150,
              48: 4.2e-5 (it reaches 0 at e = 49: at most 49 epochs)

The constants 52 and 49 are those of the 30- and 50-epoch recipes and are
kept whatever num_epochs is. At the epoch where (1 - (E - 1) / P) reaches 0
the formula gives lr 0, and after it would turn negative (lrfast) or rise
again (lradju); a num_epochs that trains that epoch is an error (no epoch
trains at lr 0), and steps past num_epochs get lr 0.

Config mistakes (unknown name or field, missing or invalid value) raise
`ConfigError` (a ValueError) with a message that names the fix.
"""

import math
import numbers
import types
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from gcp_jax.errors import ConfigError
from gcp_jax.train.config_check import FieldSpec, config_fields

# lr as a function of the (possibly fractional) 0-based epoch position.
EpochFn = Callable[[jax.Array], jax.Array]


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _is_int(x: Any, low: int) -> bool:
  return (isinstance(x, numbers.Integral) and not isinstance(x, bool)
          and x >= low)


def _is_real(x: Any, low: float) -> bool:
  return (isinstance(x, numbers.Real) and not isinstance(x, bool)
          and math.isfinite(x) and x >= low)


def _constant(fields: dict[str, Any], base_lr: float,
              num_epochs: int) -> EpochFn:
  del fields, num_epochs
  return lambda e: jnp.full_like(e, base_lr)


def _step(fields: dict[str, Any], base_lr: float, num_epochs: int) -> EpochFn:
  """lr = b * gamma^(number of milestones <= e): fast-MPN-COV's `step`."""
  del num_epochs
  milestones, gamma = fields["milestones"], fields["gamma"]
  _require(isinstance(milestones, Sequence) and milestones
           and all(_is_int(m, 1) for m in milestones)
           and list(milestones) == sorted(set(milestones)),
           f"step: milestones must be increasing positive epochs, got "
           f"{milestones!r}.")
  _require(_is_real(gamma, 0.0) and gamma > 0,
           f"step: gamma must be > 0, got {gamma!r}.")
  m = jnp.asarray(milestones, jnp.float32)
  return lambda e: base_lr * gamma**jnp.sum(e[..., None] >= m, axis=-1)


def _lrnorm(fields: dict[str, Any], base_lr: float,
            num_epochs: int) -> EpochFn:
  """lr = b * 0.1^floor(e / 30) (GCP_Optimization ResNet LRnorm)."""
  del fields, num_epochs
  return lambda e: base_lr * 0.1**jnp.floor(e / 30)


def _gcp_polynomial(name: str, period: int, power: int, recipe_epochs: int
                    ) -> Callable[[dict[str, Any], float, int], EpochFn]:
  """Builder of lr = b * max(1 - (E - 1) / period, 0)^power (LRfast/LRadju).

  E = e by default (`reference_epoch_artefact`, the reference code), E = e
  + 1 without it (the paper's 1-based epoch); see the module docstring.
  `recipe_epochs` (30 / 50) is only quoted in the error message.
  """

  def build(fields: dict[str, Any], base_lr: float,
            num_epochs: int) -> EpochFn:
    artefact = fields["reference_epoch_artefact"]
    _require(isinstance(artefact, bool),
             f"{name}: reference_epoch_artefact must be a bool, got "
             f"{artefact!r}.")
    shift = 0 if artefact else 1            # E = e + shift
    zero_epoch = period + 1 - shift         # first e with lr = 0
    _require(num_epochs <= zero_epoch,
             f"{name}: the formula reaches lr 0 at epoch {zero_epoch} "
             f"(0-based) and would "
             f"{'turn negative' if power % 2 else 'rise again'} after it; "
             f"num_epochs={num_epochs} would train epoch {zero_epoch} or "
             f"later for nothing. Use num_epochs <= {zero_epoch} (the recipe "
             f"trains {recipe_epochs} epochs).")
    # 1 - (E - 1) / period with an exact integer numerator and an integer
    # power (repeated products, not exp(log)), for float32 accuracy.
    return lambda e: base_lr * (jnp.maximum(period + 1 - shift - e, 0.0)
                                / period)**power

  return build


def _mobilenet_exponential(rate: float
                           ) -> Callable[[dict[str, Any], float, int], EpochFn]:
  """Builder of lr = b * rate^e (GCP_Optimization MobileNetV2 LRnorm/fast)."""

  def build(fields: dict[str, Any], base_lr: float,
            num_epochs: int) -> EpochFn:
    del fields, num_epochs
    return lambda e: base_lr * rate**e

  return build


# MobileNetV2 LRadju knots (epoch, lr) for the reference base 0.06.
_MOBILENET_ADJU_EPOCHS = (0.0, 50.0, 100.0, 150.0)
_MOBILENET_ADJU_LRS = (0.06, 0.01, 1e-3, 1e-5)


def _mobilenet_lradju(fields: dict[str, Any], base_lr: float,
                      num_epochs: int) -> EpochFn:
  """Piecewise linear through the knots above, scaled by b / 0.06; 1e-5 * b /
  0.06 after epoch 150 (GCP_Optimization MobileNetV2 LRadju)."""
  del fields, num_epochs
  lrs = jnp.asarray([lr / 0.06 * base_lr for lr in _MOBILENET_ADJU_LRS],
                    jnp.float32)
  xs = jnp.asarray(_MOBILENET_ADJU_EPOCHS, jnp.float32)
  return lambda e: jnp.interp(e, xs, lrs)


def _linear(fields: dict[str, Any], base_lr: float,
            num_epochs: int) -> EpochFn:
  """lr = b * max(1 - t / num_epochs, 0) at epoch position t = step /
  steps_per_epoch, i.e. b * (1 - step / T) (GCP_Optimization ShuffleNetV2)."""
  del fields
  return lambda t: base_lr * jnp.maximum(1 - t / num_epochs, 0.0)


def _cosine(fields: dict[str, Any], base_lr: float,
            num_epochs: int) -> EpochFn:
  """timm 0.4.12 `CosineLRScheduler` as `create_scheduler` builds it.

  With W = warmup_epochs, C = cooldown_epochs, cycle length T = num_epochs -
  C (timm's `--epochs`; timm then trains T + C epochs, so pass num_epochs =
  310 for DeiT's 300 + 10) and t the epoch position:

    t < W:       warmup_lr + t * (b - warmup_lr) / W
    W <= t < T:  min_lr + (b - min_lr) * (1 + cos(pi * t / T)) / 2
    t >= T:      min_lr                                   (the cooldown)

  The cosine is measured from t = 0, not from the end of the warm-up
  (timm has no warm-up prefix here), so it starts slightly below b. It is
  computed as min_lr + (b - min_lr) cos^2(pi t / (2 T)), the same value
  without the float32 cancellation of 1 + cos near t = T.
  timm's `create_scheduler` sets t_in_epochs=True: the LR changes once per
  epoch (t = e; its per-update `step_update` calls are no-ops), which is the
  default here; `per_step=True` evaluates the same curve at t = step /
  steps_per_epoch instead.
  """
  warmup, cooldown = fields["warmup_epochs"], fields["cooldown_epochs"]
  warmup_lr, min_lr = fields["warmup_lr"], fields["min_lr"]
  _require(_is_int(warmup, 0) and _is_int(cooldown, 0),
           f"cosine: warmup_epochs and cooldown_epochs must be integers "
           f">= 0, got {warmup!r} and {cooldown!r}.")
  _require(_is_real(warmup_lr, 0.0) and _is_real(min_lr, 0.0),
           f"cosine: warmup_lr and min_lr must be >= 0, got {warmup_lr!r} "
           f"and {min_lr!r}.")
  _require(isinstance(fields["per_step"], bool),
           f"cosine: per_step must be a bool, got {fields['per_step']!r}.")
  cycle = num_epochs - cooldown
  _require(warmup < cycle,
           f"cosine: warmup_epochs ({warmup}) must be shorter than the "
           f"cosine cycle num_epochs - cooldown_epochs = {num_epochs} - "
           f"{cooldown} = {cycle}.")
  slope = (base_lr - warmup_lr) / warmup if warmup else 0.0

  def lr(t: jax.Array) -> jax.Array:
    cos = min_lr + (base_lr - min_lr) * jnp.cos(jnp.pi / 2 * t / cycle)**2
    return jnp.where(t < warmup, warmup_lr + t * slope,
                     jnp.where(t < cycle, cos, min_lr))

  return lr


class _Schedule(NamedTuple):
  build: Callable[[dict[str, Any], float, int], EpochFn]
  fields: FieldSpec = FieldSpec()
  per_step: bool = False    # else the epoch position is floor()ed; cosine
                            # takes it from its `per_step` field


_ARTEFACT = types.MappingProxyType({"reference_epoch_artefact": True})
SCHEDULES: Mapping[str, _Schedule] = types.MappingProxyType({
    "constant": _Schedule(_constant),
    "step": _Schedule(_step, FieldSpec(("milestones", "gamma"))),
    "lrnorm": _Schedule(_lrnorm),
    "lrfast": _Schedule(_gcp_polynomial("lrfast", 52, 11, 30),
                        FieldSpec(optional=_ARTEFACT)),
    "lradju": _Schedule(_gcp_polynomial("lradju", 49, 2, 50),
                        FieldSpec(optional=_ARTEFACT)),
    "mobilenet_lrnorm": _Schedule(_mobilenet_exponential(0.98)),
    "mobilenet_lrfast": _Schedule(_mobilenet_exponential(0.92)),
    "mobilenet_lradju": _Schedule(_mobilenet_lradju),
    "linear": _Schedule(_linear, per_step=True),
    "cosine": _Schedule(_cosine, FieldSpec(
        ("warmup_epochs", "warmup_lr", "min_lr", "cooldown_epochs"),
        {"per_step": False})),
})


def create_lr_schedule(config: ml_collections.ConfigDict, base_lr: float,
                       steps_per_epoch: int, num_epochs: int
                       ) -> optax.Schedule:
  """The schedule `config.name` (module docstring) as step -> lr.

  Args:
    config: `name` and the fields of that schedule.
    base_lr: b, used as given.
    steps_per_epoch: updates per epoch; epoch e = step // steps_per_epoch.
    num_epochs: training length in epochs (horizon of `linear` and
      `cosine`; bounds-checked for `lrfast` / `lradju`).

  Returns:
    A jittable function of the update count (0 for the first update), giving
    a float32 lr.
  """
  name, fields = config_fields(
      config, "schedule", {n: s.fields for n, s in SCHEDULES.items()})
  _require(_is_real(base_lr, 0.0) and base_lr > 0,
           f"base_lr must be > 0, got {base_lr!r}.")
  _require(_is_int(steps_per_epoch, 1) and _is_int(num_epochs, 1),
           f"steps_per_epoch and num_epochs must be integers >= 1, got "
           f"{steps_per_epoch!r} and {num_epochs!r}.")
  spec, steps_per_epoch = SCHEDULES[name], int(steps_per_epoch)
  lr_of_epoch = spec.build(fields, float(base_lr), int(num_epochs))
  per_step = fields.get("per_step", spec.per_step)

  def schedule(count: jax.typing.ArrayLike) -> jax.Array:
    count = jnp.asarray(count)
    if per_step:
      position = count.astype(jnp.float32) / steps_per_epoch
    else:
      position = (count // steps_per_epoch).astype(jnp.float32)
    return lr_of_epoch(position).astype(jnp.float32)

  return schedule


def lr_per_epoch(schedule: optax.Schedule, steps_per_epoch: int,
                 num_epochs: int) -> np.ndarray:
  """The lr at the first update of each epoch, shape (num_epochs,)."""
  steps = jnp.arange(num_epochs) * steps_per_epoch
  return np.asarray(jax.vmap(schedule)(steps))


def format_lr_table(schedule: optax.Schedule, steps_per_epoch: int,
                    num_epochs: int) -> str:
  """One line per run of epochs with the same first-update lr, e.g.
  "epochs  30-59  lr 1.0000e-02" (for logs and docs)."""
  lrs = lr_per_epoch(schedule, steps_per_epoch, num_epochs)
  starts = [0] + [e for e in range(1, num_epochs) if lrs[e] != lrs[e - 1]]
  ends = [s - 1 for s in starts[1:]] + [num_epochs - 1]
  return "\n".join(f"epochs {s:>4}-{t:<4} lr {lrs[s]:.4e}"
                   for s, t in zip(starts, ends))
