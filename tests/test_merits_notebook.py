"""Executes notebooks/gcp_merits.ipynb top to bottom at the test scale
(tests/notebook_kernel.py) and checks its tables against the raw files of
the runs: each workdir's metrics.jsonl and robustness/results.json, with the
schedule formulas and CE written out here."""

import json
import sys

import numpy as np
import pytest
from matplotlib import image as mimage

from gcp_jax.studies import convergence, corruption
from gcp_jax.train import reporting
from tests import notebook_kernel

NOTEBOOK = "gcp_merits.ipynb"
MODELS = ["GAP", "iSQRT"]                       # the test preset's
SCHEDULES = {"LRnorm": 100, "LRfast": 30, "LRadju": 50}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  """(executed notebook, output dir)."""
  output_dir = tmp_path_factory.mktemp("merits_output")
  return notebook_kernel.execute(NOTEBOOK, output_dir), output_dir


def _json(path):
  with open(path) as f:
    return json.load(f)


def test_saved_notebook_has_no_outputs():
  assert notebook_kernel.saved_without_outputs(NOTEBOOK)


def test_runs_in_this_interpreter_and_shows_both_figures(executed):
  nb, output_dir = executed
  assert (notebook_kernel.stdout(nb.cells[-1]).strip()
          == "KERNEL:" + sys.executable)
  for name in (convergence.FIGURE, corruption.FIGURE):
    pixels = mimage.imread(output_dir / name)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100, name
  assert notebook_kernel.shown_images(nb) == 2


def test_convergence_table_matches_the_runs_metrics(executed):
  """Final top-1 = the last evaluation in each workdir's metrics.jsonl (one
  batch an epoch: epoch = step); the equal-budget column = the LRnorm run's
  evaluation at that epoch; epochs to target recomputed."""
  nb, output_dir = executed
  data = _json(output_dir / "convergence.json")
  rows = {(r["model"], r["schedule"]): r for r in data["rows"]}
  assert sorted(rows) == sorted((m, s) for m in MODELS for s in SCHEDULES)
  evals = {key: reporting.read_metrics(
      str(output_dir / "convergence" / f"{key[0]}_{key[1]}"), "eval")
      for key in rows}
  target = evals["GAP", "LRnorm"][-1]["top1"]
  for (model, schedule), row in rows.items():
    history = evals[model, schedule]
    assert history[-1]["step"] == SCHEDULES[schedule] == row["epochs"]
    assert row["final_top1"] == history[-1]["top1"]
    assert row["best_top1"] == max(e["top1"] for e in history)
    same = {e["step"]: e["top1"] for e in evals[model, "LRnorm"]}
    assert row["lrnorm_same_epochs"] == same[SCHEDULES[schedule]]
    reached = [e["step"] for e in history if e["top1"] >= target]
    assert row["epochs_to_target"] == (reached[0] if reached else None)
    assert row["target"] == target
  printed = notebook_kernel.stdout(nb.cells[4])    # training log, table
  assert printed.rstrip().endswith(
      (output_dir / "convergence.txt").read_text().strip())


@pytest.fixture(scope="module")
def curves(executed):
  _, output_dir = executed
  return {(c["model"], c["schedule"]): c for c in
          _json(output_dir / "convergence.json")["curves"]}


def test_curves_follow_the_reference_formulas(curves):
  """The lr of each epoch against the reference formulas at base LR 0.1
  (GCP_Optimization, 0-based epoch e): LRnorm 0.1 * 0.1^(e // 30), LRfast
  0.1 * (1 - (e - 1) / 52)^11, LRadju 0.1 * (1 - (e - 1) / 49)^2."""
  e = {s: np.arange(n) for s, n in SCHEDULES.items()}
  want = {"LRnorm": 0.1 * 0.1 ** (e["LRnorm"] // 30),
          "LRfast": 0.1 * (1 - (e["LRfast"] - 1) / 52) ** 11,
          "LRadju": 0.1 * (1 - (e["LRadju"] - 1) / 49) ** 2}
  for (_, schedule), c in curves.items():
    np.testing.assert_allclose(c["lr"], want[schedule], rtol=1e-6)


def test_corruption_table_is_ce_relative_to_gap(executed):
  """mCE and relative mCE recomputed from each run's results.json: CE_c =
  sum_s E_{s,c} / sum_s E^GAP_{s,c}, relative CE_c = sum_s (E_{s,c} -
  E_clean) / sum_s (E^GAP_{s,c} - E^GAP_clean)."""
  nb, output_dir = executed
  raw = {m: _json(output_dir / "convergence" / f"{m}_LRnorm" / "robustness"
                  / "results.json") for m in MODELS}
  corruptions = corruption.preset("test").corruptions

  def sums(m):
    return np.array([sum(raw[m]["cells"][f"{c}/{s}"]["error"]
                         for s in range(1, 6)) for c in corruptions])

  rows = {r["model"]: r for r in
          _json(output_dir / "corruption.json")["rows"]}
  assert list(rows) == MODELS
  for m in MODELS:
    assert raw[m]["cells"][f"{corruptions[0]}/1"]["count"] == 16
    clean = raw[m]["clean"]["error"]
    gap_clean = raw["GAP"]["clean"]["error"]
    assert rows[m]["clean_error"] == clean
    assert rows[m]["mce"] == pytest.approx(np.mean(sums(m) / sums("GAP")))
    assert rows[m]["relative_mce"] == pytest.approx(np.mean(
        (sums(m) - 5 * clean) / (sums("GAP") - 5 * gap_clean)))
  assert rows["GAP"]["mce"] == pytest.approx(1.0)
  printed = notebook_kernel.stdout(nb.cells[6])    # progress, table
  assert printed.rstrip().endswith(
      (output_dir / "corruption.txt").read_text().strip())
