"""Corruption robustness of GAP vs GCP vs DropCov on digits-C: the digits'
held-out images corrupted on the fly with the ImageNet-C functions
(docs/method.md §12 and §13).

The TPAMI 2023 paper claims that deep GCP makes networks more robust to
corrupted images (lower ImageNet-C mCE). This study measures the same
quantities on trained models, by default the LRnorm models of
`gcp_jax.studies.convergence` (the papers' standard step recipe).

Synopsis (what notebooks/gcp_merits.ipynb calls):
  settings = preset("default")                      # or "test"
  results = evaluate_models(runs, settings)         # {label: results.json}
  rows = summarize(results, out)                    # the table
  plot_corruption(results, out)                     # OUT/corruption.png

`runs` is {label: (config, workdir)} of finished training runs (trained
here or by main.py); each is evaluated by `gcp_jax.train.robustness.
run_robustness` with source "on_the_fly", the `settings`' corruptions and
severities and `max_images_per_cell` held-out images (the same images in
every cell and every model), writing WORKDIR/robustness/ (resumable).

Normalisation. ImageNet-C divides by AlexNet's errors on ImageNet, which
mean nothing on the digits, so CE here is relative to the first model
(`baseline`, GAP by default): CE_c = sum_s E_{s,c} / sum_s E^GAP_{s,c},
mCE = mean_c CE_c, relative CE_c = sum_s (E_{s,c} - E_clean) /
sum_s (E^GAP_{s,c} - E^GAP_clean) (`robustness_metrics.corruption_errors`
with a model baseline). Below 1 = more robust than GAP.

Table rows (`summarize`): label, clean error, mean corruption error, mCE
and relative mCE against the baseline, and the error per severity (mean
over corruptions). Written to OUT/corruption.json and OUT/corruption.txt.
"""

import dataclasses
import os
from typing import Any, Mapping

import ml_collections
import numpy as np
from matplotlib.figure import Figure

from gcp_jax.analysis import results_io
from gcp_jax.analysis import robustness_metrics as rm
from gcp_jax.studies import plots, presets
from gcp_jax.train.robustness import run_robustness

FIGURE = "corruption.png"


@dataclasses.dataclass(frozen=True)
class CorruptionSettings:
  """Which cells, on how many images.

  Attributes:
    corruptions: ImageNet-C corruption names (`imagecorruptions`).
    severities: 1..5; CE needs all five.
    max_images_per_cell: held-out images per cell (0 = all 450), drawn
      with `seed`, the same in every cell.
    seed: of the subset and of the random corruptions.
  """
  corruptions: tuple[str, ...]
  severities: tuple[int, ...] = rm.SEVERITIES
  max_images_per_cell: int = 0
  seed: int = 0


PRESETS = {
    # The 15 corruptions of mCE at the 5 severities, 150 images a cell.
    "default": CorruptionSettings(rm.CORRUPTIONS, max_images_per_cell=150),
    # One corruption of each kind but weather, few images (the notebook
    # test).
    "test": CorruptionSettings(("gaussian_noise", "defocus_blur", "contrast"),
                               max_images_per_cell=16),
}


def preset(name: str) -> CorruptionSettings:
  """The settings called `name` ('default' or 'test')."""
  return presets.choose(PRESETS, name)


def robustness_config(config: ml_collections.ConfigDict,
                      settings: CorruptionSettings
                      ) -> ml_collections.ConfigDict:
  """`config` (a training config) with `config.robustness` set to the
  on-the-fly cells of `settings`; `config` is not changed."""
  config = config.copy_and_resolve_references()
  config.robustness.update(
      source="on_the_fly", corruptions=tuple(settings.corruptions),
      include_extra=False, severities=tuple(settings.severities),
      seed=settings.seed,
      max_images_per_cell=settings.max_images_per_cell)
  return config


def evaluate_models(runs: Mapping[str, tuple[ml_collections.ConfigDict,
                                             str]],
                    settings: CorruptionSettings) -> dict[str, dict]:
  """{label: the contents of WORKDIR/robustness/results.json} of every run
  (`run_robustness`; finished cells are read, not recomputed)."""
  return {label: run_robustness(robustness_config(config, settings), workdir)
          for label, (config, workdir) in runs.items()}


def cell_errors(results: Mapping[str, Any]) -> dict[str, dict[int, float]]:
  """{corruption: {severity: top-1 error}} of one results.json."""
  errors: dict[str, dict[int, float]] = {}
  for key, cell in results["cells"].items():
    corruption, severity = key.split("/")
    errors.setdefault(corruption, {})[int(severity)] = cell["error"]
  return errors


def summarize(results: Mapping[str, Mapping[str, Any]], output_dir: str,
              baseline: str | None = None) -> list[dict[str, Any]]:
  """The table rows (module docstring) against `baseline` (default: the
  first label), written to OUT/corruption.json and OUT/corruption.txt."""
  baseline = baseline or next(iter(results))
  if baseline not in results:
    raise ValueError(f"No results of the baseline {baseline!r}; models: "
                     f"{sorted(results)}.")
  base_errors = cell_errors(results[baseline])
  corruptions = tuple(base_errors)
  base_means = rm.mean_errors(base_errors, corruptions)
  base_clean = results[baseline]["clean"]["error"]
  rows = []
  for label, r in results.items():
    errors = cell_errors(r)
    clean = r["clean"]["error"]
    ce = rm.corruption_errors(errors, corruptions, base_means)
    relative = rm.relative_corruption_errors(errors, clean, corruptions,
                                             base_means, base_clean)
    rows.append({
        "model": label, "clean_error": clean,
        "mean_error": float(np.mean([e for c in corruptions
                                     for e in errors[c].values()])),
        "mce": float(np.mean(list(ce.values()))),
        "relative_mce": float(np.mean(list(relative.values()))),
        "severity_error": {s: float(np.mean([errors[c][s]
                                             for c in corruptions]))
                           for s in rm.SEVERITIES},
        "corruption_error": rm.mean_errors(errors, corruptions),
        "baseline": baseline})
  results_io.atomic_write_json(os.path.join(output_dir, "corruption.json"),
                               {"rows": rows})
  results_io.atomic_write_text(os.path.join(output_dir, "corruption.txt"),
                               format_table(rows))
  return rows


def format_table(rows: list[dict[str, Any]]) -> str:
  """The rows as an aligned text table (errors in %)."""
  baseline = rows[0]["baseline"] if rows else "?"
  lines = [f"CE relative to {baseline} (1.00 = {baseline}; lower = more "
           f"robust); errors in %",
           f"{'model':<8} {'clean':>6} {'corrupt':>7} {'mCE':>5} "
           f"{'rel mCE':>7}  " + " ".join(f"{'s' + str(s):>5}"
                                           for s in rm.SEVERITIES)]
  for r in rows:
    lines.append(
        f"{r['model']:<8} {100 * r['clean_error']:>6.1f} "
        f"{100 * r['mean_error']:>7.1f} {r['mce']:>5.2f} "
        f"{r['relative_mce']:>7.2f}  " + " ".join(
            f"{100 * r['severity_error'][s]:>5.1f}" for s in rm.SEVERITIES))
  return "\n".join(lines)


def plot_corruption(results: Mapping[str, Mapping[str, Any]],
                    output_dir: str) -> str:
  """Left: top-1 error against severity (mean over corruptions; severity 0
  = clean), one line per model. Right: error per corruption (mean over
  severities), grouped bars. Writes OUT/corruption.png."""
  labels = list(results)
  errors = {label: cell_errors(r) for label, r in results.items()}
  corruptions = list(errors[labels[0]])
  fig = Figure(figsize=(13, 4))
  left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2.4]})
  width = 0.8 / len(labels)
  for i, label in enumerate(labels):
    color = plots.model_color(label, i)
    by_severity = [results[label]["clean"]["error"]] + [
        np.mean([errors[label][c][s] for c in corruptions])
        for s in rm.SEVERITIES]
    left.plot(range(len(by_severity)), by_severity, "o-", color=color,
              label=label)
    right.bar(np.arange(len(corruptions)) + (i - (len(labels) - 1) / 2)
              * width,
              [np.mean(list(errors[label][c].values())) for c in corruptions],
              width, color=color, alpha=0.85, label=label)
  left.set_xlabel("severity (0 = clean)")
  left.set_ylabel("top-1 error")
  left.set_title("mean over corruptions", fontsize=10)
  left.legend()
  right.set_xticks(range(len(corruptions)))
  right.set_xticklabels([c.replace("_", " ") for c in corruptions],
                        fontsize=8, rotation=35, ha="right")
  right.set_ylabel("top-1 error")
  right.set_title("mean over severities 1-5", fontsize=10)
  right.legend(fontsize=8)
  return plots.save_figure(fig, output_dir, FIGURE)
