"""ImageNet-C / -P metrics against values computed by hand."""

import numpy as np
import pytest

from gcp_jax.analysis import robustness_metrics as rm


def _errors(value_of):
  return {c: {s: value_of(c, s) for s in rm.SEVERITIES}
          for c in rm.CORRUPTIONS}


def test_top1_error_counts_only_unmasked():
  logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
  labels = np.array([1, 1, 1, 1])
  assert rm.top1_error(logits, labels) == 0.5
  # The two wrong ones masked out (padding): error 0.
  assert rm.top1_error(logits, labels, np.array([1, 0, 1, 0])) == 0.0


def test_ce_and_mce_of_alexnet_own_errors_are_one():
  summary = rm.summarize(_errors(lambda c, s: rm.ALEXNET_ERRORS[c]),
                         clean_error=rm.ALEXNET_CLEAN_ERROR)
  assert summary["mce"] == pytest.approx(1.0)
  assert summary["relative_mce"] == pytest.approx(1.0)


def test_mce_and_relative_mce_by_hand():
  # Every corruption has error 0.5 at every severity except gaussian
  # noise, whose severities are 0.1 ... 0.5 (mean 0.3); clean error 0.2.
  errors = _errors(lambda c, s: 0.1 * s if c == "gaussian_noise" else 0.5)
  summary = rm.summarize(errors, clean_error=0.2)
  # By hand: CE_gauss = (0.1+0.2+0.3+0.4+0.5) / (5 * 0.886428) = 1.5 /
  # 4.43214 = 0.338436; the others 0.5 / A_c.
  assert summary["ce"]["gaussian_noise"] == pytest.approx(0.338436, abs=1e-6)
  assert summary["ce"]["fog"] == pytest.approx(0.5 / 0.819324)
  expected_mce = (0.3 / 0.886428 + sum(
      0.5 / rm.ALEXNET_ERRORS[c] for c in rm.CORRUPTIONS[1:])) / 15
  assert summary["mce"] == pytest.approx(expected_mce)
  # Relative: (0.3 - 0.2) / (0.886428 - 0.43478) = 0.1 / 0.451648.
  assert summary["relative_ce"]["gaussian_noise"] == pytest.approx(
      0.221412, abs=1e-6)
  assert summary["relative_ce"]["brightness"] == pytest.approx(
      0.3 / (0.564592 - 0.43478))
  expected_rel = (0.1 / 0.451648 + sum(
      0.3 / (rm.ALEXNET_ERRORS[c] - 0.43478)
      for c in rm.CORRUPTIONS[1:])) / 15
  assert summary["relative_mce"] == pytest.approx(expected_rel)
  assert summary["severity_error"][1] == pytest.approx((0.1 + 14 * 0.5) / 15)
  assert summary["mean_error"]["gaussian_noise"] == pytest.approx(0.3)


def test_mce_from_fake_logits():
  # 4 images, labels 0..3; at severity s the first s-1 (capped at 4)
  # images are predicted wrongly: errors 0, .25, .5, .75, 1 (mean .5).
  labels = np.arange(4)
  errors = {}
  for c in rm.CORRUPTIONS:
    errors[c] = {}
    for s in rm.SEVERITIES:
      logits = np.eye(4)[labels]
      logits[:s - 1] = np.roll(logits[:s - 1], 1, axis=1)
      errors[c][s] = rm.top1_error(logits, labels)
  assert [errors["fog"][s] for s in rm.SEVERITIES] == [0, .25, .5, .75, 1]
  summary = rm.summarize(errors, clean_error=0.0)
  assert summary["mce"] == pytest.approx(
      np.mean([0.5 / a for a in rm.ALEXNET_ERRORS.values()]))
  assert summary["relative_mce"] == pytest.approx(np.mean(
      [0.5 / (a - 0.43478) for a in rm.ALEXNET_ERRORS.values()]))


def test_incomplete_grid_has_no_mce_and_ce_names_the_gap():
  errors = {"fog": {1: 0.3, 2: 0.4}}
  summary = rm.summarize(errors, clean_error=0.1)
  assert summary["mce"] is None and summary["relative_mce"] is None
  assert summary["mean_error"]["fog"] == pytest.approx(0.35)
  with pytest.raises(ValueError, match=r"'fog' lacks severities \[3, 4, 5\]"):
    rm.corruption_errors(errors, ("fog",))


def test_flip_probability_by_hand():
  predictions = np.array([[1, 1, 2, 2, 1],    # consecutive flips: 2 of 4
                          [3, 3, 3, 3, 3]])   # 0 of 4
  assert rm.flip_probability(predictions, noise=False) == 2 / 8
  # Against the first frame: row 0 differs at frames 3 and 4 -> 2 of 4.
  predictions[0] = [1, 2, 2, 1, 2]
  assert rm.flip_probability(predictions, noise=False) == 3 / 8
  assert rm.flip_probability(predictions, noise=True) == 3 / 8
  predictions[0] = [1, 2, 1, 2, 1]
  assert rm.flip_probability(predictions, noise=False) == 4 / 8
  assert rm.flip_probability(predictions, noise=True) == 2 / 8


def test_top5_distance_by_hand():
  base = np.arange(10, 0, -1, dtype=float)        # ranking 0, 1, ..., 9
  swap12 = base.copy()
  swap12[[0, 1]] = swap12[[1, 0]]                 # top-2 swapped: d = 2
  drop5 = base.copy()
  drop5[4] = -1.0                                 # rank-5 class to last
  # drop5's ranking: 0,1,2,3,5,6,...,4: class 4 goes to rank 10 ->
  # |min(10, 6) - 5| = 1; the others keep ranks 1..4: d = 1.
  logits = np.stack([np.stack([base, swap12, swap12, drop5])])
  # Consecutive: d(base, swap12) = 2, d(swap12, swap12) = 0,
  # d(swap12, drop5) = 2 (top-2 swapped back) + 1 = 3 -> mean 5/3.
  assert rm.top5_distance(logits, noise=False) == pytest.approx(5 / 3)
  # Against the first frame: 2, 2, 1 -> 5/3 as well; a different case:
  logits = np.stack([np.stack([base, swap12, base, drop5])])
  assert rm.top5_distance(logits, noise=True) == pytest.approx(3 / 3)
  # Consecutive: 2, 2 (swapped back), 1.
  assert rm.top5_distance(logits, noise=False) == pytest.approx(5 / 3)


def test_another_model_as_the_baseline():
  """Hand-computed: two corruptions, the model's errors 0.2..0.6 and
  0.1 (flat) against a baseline with means 0.5 and 0.25, clean errors 0.05
  and 0.1: CE = 0.4 / 0.5 and 0.1 / 0.25; relative CE = (0.4 - 0.05) /
  (0.5 - 0.1) and (0.1 - 0.05) / (0.25 - 0.1)."""
  errors = {"fog": {s: 0.1 * (s + 1) for s in rm.SEVERITIES},
            "snow": {s: 0.1 for s in rm.SEVERITIES}}
  base = {"fog": {s: 0.5 for s in rm.SEVERITIES},
          "snow": {1: 0.05, 2: 0.15, 3: 0.25, 4: 0.35, 5: 0.45}}
  baseline = rm.mean_errors(base, ("fog", "snow"))
  assert baseline == pytest.approx({"fog": 0.5, "snow": 0.25})
  ce = rm.corruption_errors(errors, ("fog", "snow"), baseline)
  assert ce == pytest.approx({"fog": 0.8, "snow": 0.4})
  rel = rm.relative_corruption_errors(errors, 0.05, ("fog", "snow"),
                                      baseline, baseline_clean_error=0.1)
  assert rel == pytest.approx({"fog": 0.875, "snow": 1 / 3})
  with pytest.raises(ValueError, match="lacks severities"):
    rm.mean_errors({"fog": {1: 0.1}}, ("fog",))
