"""The study's numbers: probe bands, landscape rise, table rows, text table,
against values worked out by hand."""

import numpy as np
import pytest

from gcp_jax.analysis.gradient_probe import GradientProbeResult
from gcp_jax.analysis.landscape import LandscapeResult
from gcp_jax.studies import summary


def _probe(step, losses, changes, bn_mode="batch"):
  return GradientProbeResult(np.array([0.1, 1.0, 2.0]), np.array(losses),
                             np.array(changes), 0.0, 1.0, bn_mode, 8, 1, step)


def _landscape(axes, loss):
  loss = np.asarray(loss, np.float64)
  return LandscapeResult(tuple(np.asarray(a) for a in axes), loss,
                         np.zeros_like(loss), np.ones(loss.shape, bool),
                         "running", "k", {}, 0)


def test_probe_bands_sort_by_step_and_take_min_max_over_eta():
  bands = summary.probe_bands([
      _probe(20, [3.0, 1.0, 7.0], [0.5, 0.1, 0.2]),
      _probe(0, [2.0, 2.5, 9.0], [0.0, 0.3, 0.4])])
  np.testing.assert_array_equal(bands.steps, [0, 20])
  np.testing.assert_array_equal(bands.loss_min, [2.0, 1.0])
  np.testing.assert_array_equal(bands.loss_max, [9.0, 7.0])
  np.testing.assert_array_equal(bands.loss_range, [7.0, 6.0])
  np.testing.assert_array_equal(bands.grad_change_range, [0.4, 0.4])
  assert bands.bn_mode == "batch"


def test_probe_bands_reject_mixed_bn_modes_and_empty_input():
  with pytest.raises(ValueError, match="one BN mode"):
    summary.probe_bands([_probe(0, [1, 2, 3], [1, 2, 3]),
                         _probe(1, [1, 2, 3], [1, 2, 3], "running")])
  with pytest.raises(ValueError, match="No gradient-probe"):
    summary.probe_bands([])


def test_landscape_rise_1d_is_mean_of_ends_minus_centre():
  axis = [-1.0, -0.5, 0.0, 0.5, 1.0]
  result = _landscape([axis], [3.0, 1.0, 0.5, 2.0, 5.0])
  assert summary.landscape_rise(result) == pytest.approx(3.5)


def test_landscape_rise_2d_is_mean_of_perimeter_minus_origin():
  # loss = a^2 + b^2 + 1 on a 5 x 5 grid over [-1, 1]^2: the 16 perimeter
  # points sum to 22 + 16 (rows a = +-1: 2 x (5 + 2.5); the 6 other
  # points of the columns b = +-1: 2 x (3 + 0.5)); the origin holds 1.
  axis = np.linspace(-1, 1, 5)
  loss = axis[:, None] ** 2 + axis[None, :] ** 2 + 1.0
  result = _landscape([axis, axis], loss)
  assert summary.landscape_rise(result) == pytest.approx(38 / 16 - 1)


def test_landscape_rise_needs_the_origin_and_a_complete_grid():
  with pytest.raises(ValueError, match="does not contain 0"):
    summary.landscape_rise(_landscape([[-1.0, 1.0]], [1.0, 2.0]))
  partial = _landscape([[-1.0, 0.0, 1.0]], [1.0, 0.0, 1.0])
  partial.done[0] = False
  with pytest.raises(ValueError, match="not complete"):
    summary.landscape_rise(partial)


def test_summary_row_and_table():
  bands = summary.probe_bands([_probe(0, [1.0, 2.0, 5.0], [0.0, 1.0, 2.0]),
                               _probe(9, [1.0, 1.5, 2.0], [0.0, 0.5, 1.0])])
  hess = summary.HessianSummary(12.5, 0.25, 40.0, 2.0, 10, 20, 128, 2, 500,
                                None, "running")
  axis = [-1.0, 0.0, 1.0]
  row = summary.summary_row("GCP", 0.9, bands, _landscape([axis], [4, 1, 2]),
                            None, hess)
  assert row == {
      "model": "GCP", "top1": 0.9, "loss_range_last": 1.0,
      "loss_range_mean": 2.5, "grad_change_range_last": 1.0,
      "grad_change_range_mean": 1.5, "rise_1d": 2.0, "rise_2d": None,
      "top_eigenvalue": 12.5, "eigenvalue_residual": 0.25, "trace": 40.0,
      "trace_stderr": 2.0}
  empty = summary.summary_row("user run", 0.5, None, None, None, None)
  lines = summary.format_table([row, empty]).splitlines()
  assert len(lines) == 4 and set(lines[1]) == {"-"}
  assert lines[2].split()[:4] == ["GCP", "0.900", "1", "2.5"]
  assert "12.5 +- 0.25" in lines[2] and "40 +- 2" in lines[2]
  # every unmeasured cell of the second row shows '-'
  assert lines[3].split()[:3] == ["user", "run", "0.500"]
  assert lines[3].split()[3:] == ["-"] * 8
