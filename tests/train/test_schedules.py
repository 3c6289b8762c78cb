"""LR schedules against docs/method.md §8.4 and the reference scripts'
formulas."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gcp_jax.train.schedules import (SCHEDULES, create_lr_schedule,
                                     format_lr_table, lr_per_epoch)

SPE = 7  # steps per epoch


def _schedule(base_lr, num_epochs, steps_per_epoch=SPE, **fields):
  return create_lr_schedule(ml_collections.ConfigDict(fields), base_lr,
                            steps_per_epoch, num_epochs)


def _per_epoch(num_epochs, base_lr=0.1, **fields):
  return lr_per_epoch(_schedule(base_lr, num_epochs, **fields), SPE,
                      num_epochs)


def _rounds_to(values, table):
  """values[e] rounded to the significant digits shown in table[e] (a
  string, so that "2.0e-5" keeps its two digits) equals the shown value."""
  for e, shown in table.items():
    digits = len(shown.split("e")[0].replace(".", "").lstrip("0"))
    assert float(f"{values[e]:.{digits - 1}e}") == float(shown), (
        e, values[e], shown)


# docs/method.md §8.4, reference code (0-based epoch in the 1-based formula).
LRFAST_REFERENCE = {0: "0.1233", 1: "0.1", 2: "0.0808", 5: "0.0415",
                    10: "0.0124", 15: "3.2e-3", 20: "6.7e-4", 25: "1.1e-4",
                    29: "2.0e-5"}
LRADJU_REFERENCE = {0: "0.1041", 1: "0.1", 10: "0.0666", 20: "0.0375",
                    30: "0.0167", 40: "4.2e-3", 48: "1.7e-4", 49: "4.2e-5"}


def _gcp_reference(epoch, period, power):
  """GCP_Optimization `adjust_learning_rate`: e_start = 1, e_end = period + 1,
  evaluated at the 0-based epoch (float64)."""
  return 0.1 * (1 - (epoch - 1) / period)**power


@pytest.mark.parametrize("name,epochs,period,power,table", [
    ("lrfast", 30, 52, 11, LRFAST_REFERENCE),
    ("lradju", 50, 49, 2, LRADJU_REFERENCE)])
def test_gcp_polynomial_reference_artefact(name, epochs, period, power,
                                           table):
  got = _per_epoch(epochs, name=name, reference_epoch_artefact=True)
  _rounds_to(got, table)
  want = [_gcp_reference(e, period, power) for e in range(epochs)]
  np.testing.assert_allclose(got, want, rtol=2e-6)


def test_lrfast_epoch0_artefact_value():
  """The reference code's epoch-0 LRfast value at base 0.1: 0.12331
  (docs/method.md §8.4)."""
  got = _per_epoch(30, name="lrfast", reference_epoch_artefact=True)
  assert abs(got[0] - 0.12331) < 5e-6


@pytest.mark.parametrize("name,epochs", [("lrfast", 30), ("lradju", 50)])
def test_gcp_polynomial_default_is_the_reference(name, epochs):
  """Faithful by default: the reference code's values."""
  np.testing.assert_array_equal(
      _per_epoch(epochs, name=name),
      _per_epoch(epochs, name=name, reference_epoch_artefact=True))


@pytest.mark.parametrize("name,epochs,period,power", [
    ("lrfast", 30, 52, 11), ("lradju", 49, 49, 2)])
def test_gcp_polynomial_paper_formula(name, epochs, period, power):
  """`reference_epoch_artefact=False`: 1-based epoch E = e + 1, i.e. the
  reference shifted one epoch earlier; never above the base lr."""
  got = _per_epoch(epochs, name=name, reference_epoch_artefact=False)
  assert got[0] == np.float32(0.1)
  assert np.all(got <= np.float32(0.1)) and np.all(np.diff(got) < 0)
  want = [_gcp_reference(e + 1, period, power) for e in range(epochs)]
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-12)


def test_gcp_polynomial_paper_formula_numbers():
  """The numbers quoted in the schedules module docstring."""
  _rounds_to(_per_epoch(30, name="lrfast", reference_epoch_artefact=False),
             {1: "0.0808", 2: "0.0650", 5: "0.0329", 10: "9.5e-3",
              20: "4.8e-4", 29: "1.27e-5"})
  lradju = _per_epoch(49, name="lradju", reference_epoch_artefact=False)
  _rounds_to(lradju, {1: "0.0960", 10: "0.0633", 20: "0.0350", 30: "0.0150",
                      48: "4.2e-5"})


def test_lrnorm_decades():
  got = _per_epoch(100, name="lrnorm")
  for epochs, lr in [((0, 29), 0.1), ((30, 59), 0.01), ((60, 89), 1e-3),
                     ((90, 99), 1e-4)]:
    np.testing.assert_allclose(got[epochs[0]:epochs[1] + 1], lr, rtol=1e-6)


def test_step_milestones_and_within_epoch_constancy():
  """fast-MPN-COV: 0.1, x0.1 at epochs 30, 45, 60 of 65."""
  schedule = _schedule(0.1, 65, name="step", milestones=(30, 45, 60),
                       gamma=0.1)
  for step, lr in [(0, 0.1), (30 * SPE - 1, 0.1), (30 * SPE, 0.01),
                   (45 * SPE - 1, 0.01), (45 * SPE, 1e-3), (60 * SPE, 1e-4),
                   (65 * SPE - 1, 1e-4)]:
    np.testing.assert_allclose(schedule(step), lr, rtol=1e-6)


def test_mobilenet_schedules_match_reference_branches():
  """GCP_Optimization MobileNetV2 formulas, written as the reference's
  branches (float64), at the reference base lrs."""
  e = np.arange(160)
  np.testing.assert_allclose(_per_epoch(90, 0.045, name="mobilenet_lrnorm"),
                             0.045 * 0.98**e[:90], rtol=1e-5)
  np.testing.assert_allclose(_per_epoch(100, 0.06, name="mobilenet_lrfast"),
                             0.06 * 0.92**e[:100], rtol=1e-5)
  want = np.select(
      [e <= 50, e <= 100, e <= 150],
      [0.06 - (0.06 - 0.01) / 50 * e, 0.01 - (0.01 - 0.001) / 50 * (e - 50),
       0.001 - (0.001 - 0.00001) / 50 * (e - 100)], 0.00001)
  got = lr_per_epoch(_schedule(0.06, 150, name="mobilenet_lradju"), SPE, 160)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  half = lr_per_epoch(_schedule(0.03, 150, name="mobilenet_lradju"), SPE, 160)
  np.testing.assert_allclose(half, want / 2, rtol=1e-5)


def test_linear_is_per_update():
  """ShuffleNetV2: b (1 - t / T), T = steps_per_epoch * epochs."""
  schedule = _schedule(0.5, 3, steps_per_epoch=10, name="linear")
  got = [float(schedule(t)) for t in (0, 1, 15, 29, 30, 45)]
  np.testing.assert_allclose(got, [0.5, 0.5 * 29 / 30, 0.25, 0.5 / 30, 0, 0],
                             rtol=1e-6, atol=1e-9)


DEIT = dict(name="cosine", warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5,
            cooldown_epochs=10)


def _timm_cosine(t, base=1e-3, warmup=5, warmup_lr=1e-6, min_lr=1e-5,
                 cycle=300):
  """timm 0.4.12 CosineLRScheduler._get_lr (t_mul 1, cycle_limit 1)."""
  if t < warmup:
    return warmup_lr + t * (base - warmup_lr) / warmup
  if t // cycle >= 1:
    return min_lr
  return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * t / cycle))


def test_cosine_matches_timm_per_epoch():
  """DeiT recipe: 300 cosine epochs + 10 cooldown epochs at min_lr."""
  got = _per_epoch(310, 1e-3, **DEIT)
  np.testing.assert_allclose(got, [_timm_cosine(e) for e in range(310)],
                             rtol=2e-6)
  assert got[0] == np.float32(1e-6)
  assert np.all(got[300:] == np.float32(1e-5))
  schedule = _schedule(1e-3, 310, **DEIT)
  assert schedule(3 * SPE) == schedule(4 * SPE - 1)  # constant in an epoch


def test_cosine_per_step():
  schedule = _schedule(1e-3, 310, **DEIT, per_step=True)
  for step in (0, 17, 5 * SPE - 1, 5 * SPE, 1000, 300 * SPE - 1, 300 * SPE,
               310 * SPE - 1):
    np.testing.assert_allclose(schedule(step), _timm_cosine(step / SPE),
                               rtol=2e-6)


def test_jit_and_vmap_match_eager():
  """Up to float32 rounding (XLA may rewrite x / c as x * (1 / c) under jit,
  and the 11th power amplifies it)."""
  schedule = _schedule(0.1, 30, name="lrfast", reference_epoch_artefact=True)
  steps = jnp.arange(0, 30 * SPE, 5, dtype=jnp.int32)
  eager = np.array([schedule(int(s)) for s in steps[:12]])
  np.testing.assert_allclose(jax.jit(jax.vmap(schedule))(steps)[:12], eager,
                             rtol=3e-6)
  assert jax.jit(schedule)(jnp.int32(0)).dtype == jnp.float32


ONE_EPOCH_FIELDS = {
    "constant": {}, "step": {"milestones": (2,), "gamma": 0.5}, "lrnorm": {},
    "lrfast": {}, "lradju": {}, "mobilenet_lrnorm": {},
    "mobilenet_lrfast": {}, "mobilenet_lradju": {}, "linear": {},
    "cosine": {"warmup_epochs": 0, "warmup_lr": 0.0, "min_lr": 0.0,
               "cooldown_epochs": 0}}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_given_base_lr_is_used(name):
  """The base LR is used as given: lr = 0.05 gives 0.05 at the start,
  never a per-architecture 0.1 (LRfast
  and LRadju: at epoch 1; the reference's 0-based epoch puts epoch 0 above
  the base, by (1 + 1 / period)^power)."""
  schedule = _schedule(0.05, 10, name=name, **ONE_EPOCH_FIELDS[name])
  start = SPE if name in ("lrfast", "lradju") else 0
  assert schedule(start) == np.float32(0.05)


def test_every_schedule_has_a_test_config():
  assert set(ONE_EPOCH_FIELDS) == set(SCHEDULES)


@pytest.mark.parametrize("fields,message", [
    ({"name": "exponential"}, "valid names: constant, cosine, linear"),
    ({}, "Unknown schedule None"),
    ({"name": "step", "milestones": (30,)}, r"needs the field\(s\) \['gamma'"),
    ({"name": "step", "milestones": (30,), "gamma": 0.1, "gama": 0.1},
     r"Unknown schedule field\(s\) \['gama'\]"),
    ({"name": "step", "milestones": (30, 20), "gamma": 0.1}, "increasing"),
    ({"name": "step", "milestones": (), "gamma": 0.1}, "increasing"),
    ({"name": "lrfast", "reference_epoch_artefact": 1}, "must be a bool"),
    ({"name": "cosine", "warmup_epochs": 5, "warmup_lr": 1e-6,
      "min_lr": 1e-5, "cooldown_epochs": 60}, "shorter than the cosine"),
])
def test_config_errors(fields, message):
  with pytest.raises(ValueError, match=message):
    _schedule(0.1, 60, **fields)


@pytest.mark.parametrize("name,artefact,epochs,ok", [
    ("lrfast", True, 53, True), ("lrfast", True, 54, False),
    ("lradju", True, 50, True), ("lradju", True, 51, False),
    ("lrfast", False, 52, True), ("lrfast", False, 53, False),
    ("lradju", False, 49, True), ("lradju", False, 50, False)])
def test_gcp_polynomial_horizon(name, artefact, epochs, ok):
  """No epoch may train at the zero of the polynomial or past it."""
  if ok:
    lrs = _per_epoch(epochs, name=name, reference_epoch_artefact=artefact)
    assert np.all(lrs > 0)
  else:
    with pytest.raises(ValueError, match="reaches lr 0 at epoch"):
      _schedule(0.1, epochs, name=name, reference_epoch_artefact=artefact)


@pytest.mark.parametrize("base_lr,spe,epochs", [
    (0.0, 1, 1), (-0.1, 1, 1), (0.1, 0, 1), (0.1, 1, 2.5)])
def test_argument_errors(base_lr, spe, epochs):
  with pytest.raises(ValueError):
    _schedule(base_lr, epochs, steps_per_epoch=spe, name="constant")


def test_format_lr_table_merges_equal_epochs():
  schedule = _schedule(0.1, 65, name="step", milestones=(30, 45, 60),
                       gamma=0.1)
  lines = format_lr_table(schedule, SPE, 65).splitlines()
  assert len(lines) == 4
  assert lines[0].split() == ["epochs", "0-29", "lr", "1.0000e-01"]
  assert lines[3].split()[1] == "60-64"
