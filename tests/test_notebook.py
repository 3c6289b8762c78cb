"""Executes notebooks/loss_landscape.ipynb top to bottom at the test scale
(tests/notebook_kernel.py: kernel, environment); about two minutes on 2 idle
CPU cores."""

import json
import math
import os
import sys

import numpy as np
import pytest
from matplotlib import image as mimage

from gcp_jax.studies import optimization, plots
from tests import notebook_kernel

NOTEBOOK = "loss_landscape.ipynb"
LABELS = ["GAP", "iSQRT", "DropCov"]
_stdout = notebook_kernel.stdout


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  """(executed notebook, output dir)."""
  output_dir = tmp_path_factory.mktemp("notebook_output")
  return notebook_kernel.execute(NOTEBOOK, output_dir), output_dir


def test_saved_notebook_has_no_outputs():
  assert notebook_kernel.saved_without_outputs(NOTEBOOK)


def test_kernel_runs_this_interpreter(executed):
  nb, _ = executed
  assert _stdout(nb.cells[-1]).strip() == "KERNEL:" + sys.executable


def test_every_figure_is_a_readable_png(executed):
  nb, output_dir = executed
  for name in plots.FIGURES.values():
    path = output_dir / name
    assert path.stat().st_size > 0, name
    pixels = mimage.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100, name
  assert notebook_kernel.shown_images(nb) == len(plots.FIGURES)


def test_table_has_one_finite_row_per_model(executed):
  nb, output_dir = executed
  with open(output_dir / "summary.json") as f:
    rows = json.load(f)["rows"]
  assert [r["model"] for r in rows] == LABELS
  for row in rows:
    numbers = [v for k, v in row.items() if k != "model"]
    assert all(isinstance(v, float) and math.isfinite(v) for v in numbers), \
        row
  text = (output_dir / "summary.txt").read_text()
  printed = _stdout(nb.cells[-2])
  assert text.strip() == printed.strip()
  assert all(label in printed for label in LABELS)


def test_table_matches_the_raw_result_files(executed):
  """Probe ranges recomputed from each workdir's raw probe file, landscape
  rise and Hessian numbers from their JSON files."""
  _, output_dir = executed
  with open(output_dir / "summary.json") as f:
    rows = {r["model"]: r for r in json.load(f)["rows"]}
  with open(output_dir / "hessian.json") as f:
    hessians = json.load(f)
  for label in LABELS:
    row = rows[label]
    with open(output_dir / "runs" / label / "gradient_probe.json") as f:
      probes = sorted(json.load(f)["probes"], key=lambda p: p["step"])
    loss_ranges = [np.ptp(p["losses"]) for p in probes]
    grad_ranges = [np.ptp(p["grad_changes"]) for p in probes]
    assert len(probes) >= 2
    np.testing.assert_allclose(
        [row["loss_range_last"], row["loss_range_mean"],
         row["grad_change_range_last"], row["grad_change_range_mean"]],
        [loss_ranges[-1], np.mean(loss_ranges), grad_ranges[-1],
         np.mean(grad_ranges)], rtol=1e-12)
    with open(output_dir / f"landscape_{label}_1d.json") as f:
      loss = np.asarray(json.load(f)["loss"])
    centre = len(loss) // 2
    np.testing.assert_allclose(row["rise_1d"],
                               (loss[0] + loss[-1]) / 2 - loss[centre])
    assert hessians[label]["bn_mode"] == "running"
    assert row["trace"] == hessians[label]["trace"]
    assert row["top_eigenvalue"] == hessians[label]["top_eigenvalue"]


def test_user_runs_load_the_trained_workdirs_without_training(executed):
  _, output_dir = executed
  with open(output_dir / "summary.json") as f:
    rows = {r["model"]: r for r in json.load(f)["rows"]}
  workdir = output_dir / "runs" / "iSQRT"
  saved = sorted(os.listdir(workdir / "checkpoints"))
  last = max(int(name) for name in saved if name.isdigit())
  [model] = optimization.train_models(
      optimization.preset("test"), None, str(output_dir),
      user_runs={"mine": str(workdir)})
  assert sorted(os.listdir(workdir / "checkpoints")) == saved
  assert (model.label, model.step) == ("mine", last)
  assert model.top1 == rows["iSQRT"]["top1"]
  assert model.bands.loss_range[-1] == rows["iSQRT"]["loss_range_last"]
