"""The convergence and digits-C studies' configs and tables on made-up
curves and results (the training and the whole pipeline run in
tests/test_merits_notebook.py)."""

import json

import numpy as np
import pytest

from configs import default
from gcp_jax.studies import convergence, corruption


def test_runs_differ_only_in_head_and_schedule():
  settings = convergence.preset("default")
  base = default.get_config()
  before = base.to_dict()
  runs = convergence.digits_runs(settings, base, "/out")
  assert base.to_dict() == before
  assert sorted(runs) == sorted((m, s) for m in ("GAP", "iSQRT", "DropCov")
                                for s in ("LRnorm", "LRfast", "LRadju"))
  for (model, schedule), (config, workdir) in runs.items():
    assert workdir == f"/out/convergence/{model}_{schedule}"
    assert config.schedule.to_dict() == {"name": schedule.lower()}
    assert config.num_epochs == {"LRnorm": 100, "LRfast": 30,
                                 "LRadju": 50}[schedule]
    assert config.data.steps_per_epoch == 7
    assert config.model.head == {"GAP": "gap", "iSQRT": "gcp",
                                 "DropCov": "dropcov"}[model]
    assert config.model.backbone_options.to_dict() == {"width": 16}
    rest = config.to_dict()
    for key in ("model", "schedule", "num_epochs"):
      rest.pop(key)
    first = runs["GAP", "LRnorm"][0].to_dict()
    for key in ("model", "schedule", "num_epochs"):
      first.pop(key)
    assert rest == first


def test_the_test_preset_trains_two_models():
  runs = convergence.digits_runs(convergence.preset("test"),
                                 default.get_config(), "/out")
  assert sorted({m for m, _ in runs}) == ["GAP", "iSQRT"]
  with pytest.raises(ValueError, match="Unknown preset 'fast'"):
    convergence.preset("fast")


def _curve(model, schedule, epochs, top1):
  return convergence.Curve(model, schedule, np.array(epochs, float),
                           np.array(top1), np.ones(int(epochs[-1])), "/w")


def test_table_by_hand(tmp_path):
  """Target = GAP LRnorm's final 0.80. iSQRT LRfast reaches 0.80 first at
  epoch 20; its LRnorm run had 0.60 at epoch 30. GAP LRfast never does."""
  curves = {("GAP", "LRnorm"): _curve("GAP", "LRnorm", [10, 30, 50, 100],
                                      [0.5, 0.6, 0.7, 0.8]),
            ("GAP", "LRfast"): _curve("GAP", "LRfast", [10, 20, 30],
                                      [0.5, 0.7, 0.75]),
            ("iSQRT", "LRnorm"): _curve("iSQRT", "LRnorm", [10, 30, 100],
                                        [0.55, 0.6, 0.9]),
            ("iSQRT", "LRfast"): _curve("iSQRT", "LRfast", [10, 20, 30],
                                        [0.6, 0.85, 0.82])}
  rows = convergence.summarize(curves, str(tmp_path))
  got = {(r["model"], r["schedule"]): r for r in rows}
  assert got["iSQRT", "LRfast"] == {
      "model": "iSQRT", "schedule": "LRfast", "epochs": 30.0,
      "final_top1": 0.82, "best_top1": 0.85, "lrnorm_same_epochs": 0.6,
      "epochs_to_target": 20.0, "target": 0.8, "target_run": "GAP/LRnorm"}
  assert got["GAP", "LRfast"]["epochs_to_target"] is None
  assert got["GAP", "LRfast"]["lrnorm_same_epochs"] == 0.6
  assert got["GAP", "LRnorm"]["epochs_to_target"] == 100.0
  assert got["iSQRT", "LRnorm"]["epochs_to_target"] == 100.0
  saved = json.loads((tmp_path / "convergence.json").read_text())
  assert saved["rows"] == rows and len(saved["curves"]) == 4
  table = (tmp_path / "convergence.txt").read_text()
  assert "target: final top-1 of GAP/LRnorm = 80.0%" in table
  assert "never" in table
  with pytest.raises(ValueError, match="No run \\('GAP', 'LRnorm'\\)"):
    convergence.summarize({("iSQRT", "LRfast"): curves["iSQRT", "LRfast"]},
                          str(tmp_path))


def _results(clean, errors):
  return {"clean": {"error": clean},
          "cells": {f"{c}/{s}": {"error": e}
                    for c, by_s in errors.items() for s, e in by_s.items()}}


def test_corruption_table_by_hand(tmp_path):
  """GAP errors: fog 0.4 at every severity, snow 0.2; clean 0.1. Model B:
  fog 0.2, snow 0.3 at every severity; clean 0.05. CE: fog 0.5, snow 1.5,
  mCE 1.0; relative: (0.2 - 0.05) / 0.3 = 0.5 and (0.3 - 0.05) / 0.1 = 2.5,
  mean 1.5."""
  sev = range(1, 6)
  results = {"GAP": _results(0.1, {"fog": {s: 0.4 for s in sev},
                                   "snow": {s: 0.2 for s in sev}}),
             "B": _results(0.05, {"fog": {s: 0.2 for s in sev},
                                  "snow": {s: 0.3 for s in sev}})}
  rows = {r["model"]: r for r in corruption.summarize(results,
                                                      str(tmp_path))}
  assert rows["GAP"]["mce"] == pytest.approx(1.0)
  assert rows["GAP"]["relative_mce"] == pytest.approx(1.0)
  assert rows["B"]["mce"] == pytest.approx(1.0)
  assert rows["B"]["relative_mce"] == pytest.approx(1.5)
  assert rows["B"]["mean_error"] == pytest.approx(0.25)
  assert rows["B"]["severity_error"][3] == pytest.approx(0.25)
  assert rows["B"]["corruption_error"] == pytest.approx({"fog": 0.2,
                                                         "snow": 0.3})
  assert "CE relative to GAP" in (tmp_path / "corruption.txt").read_text()


def test_robustness_config_sets_the_cells_only():
  config = default.get_config()
  settings = corruption.preset("test")
  out = corruption.robustness_config(config, settings)
  assert config.robustness.max_images_per_cell == 0      # unchanged
  assert out.robustness.corruptions == settings.corruptions
  assert out.robustness.max_images_per_cell == 16
  assert out.robustness.source == "on_the_fly"
  assert out.model.to_dict() == config.model.to_dict()
