"""Convergence under a fast learning-rate decay: GAP vs GCP vs DropCov
trained with LRnorm, LRfast and LRadju (docs/method.md §8.4 and §13).

The CVPR 2020 and TPAMI 2023 papers claim that GCP networks tolerate a
rapid decay of the learning rate: with LRfast (30 epochs) or LRadju (50)
they reach about the accuracy GAP networks reach with LRnorm (100 epochs).
This study trains each model with each schedule and measures that.

Synopsis (what notebooks/gcp_merits.ipynb calls):
  settings = preset("default")                       # or "test"
  curves = train_curves(settings, base_config, out)  # {(model, schedule): Curve}
  # or: train_curves(settings, None, out,
  #                  user_runs={("GAP", "LRnorm"): "/runs/gap_lrnorm", ...})
  rows = summarize(curves, out)                      # the table
  plot_convergence(curves, out)                      # OUT/convergence.png

Runs. Models: the resnet_tiny GAP / iSQRT / DropCov models of
`gcp_jax.studies.optimization` (width `settings.width`, d = `settings.dim`)
on the digits. Schedules (`SCHEDULES`): the reference formulas
(`gcp_jax.train.schedules`, reference_epoch_artefact as the reference code)
at the papers' lengths in epochs. Every other setting (optimiser, base LR,
weight decay, data, seed) is the base config's, the same in every run. An
epoch is `settings.steps_per_epoch` batches (`data.steps_per_epoch`; 0 = a
full pass over the 1347 training digits), so that the 180 epochs of a model
stay cheap on a CPU; held-out top-1 every `settings.eval_every` epochs.
Workdirs are OUT/convergence/<model>_<schedule>; a finished one is read,
not retrained, and an interrupted one resumes.

Budgets. Shortened: LRfast and LRadju train 30 and 50 epochs against
LRnorm's 100. Equal: LRnorm's rate does not depend on the run's length, so
its curve up to epoch 30 (50) is exactly an LRnorm run of 30 (50) epochs;
the table sets that value beside LRfast (LRadju).

Table (`summarize`), one row per (model, schedule): epochs; final and best
held-out top-1; `lrnorm_same_epochs`, the same model's LRnorm top-1 at that
epoch (the equal budget); `epochs_to_target`, the first evaluated epoch
whose top-1 reaches `target`, the final top-1 of GAP with LRnorm (None if
never). Written to OUT/convergence.json (with the curves) and
OUT/convergence.txt.
"""

import dataclasses
import os
from typing import Any, Mapping, NamedTuple

import ml_collections
import numpy as np
from matplotlib.figure import Figure

from gcp_jax.analysis import results_io
from gcp_jax.studies import plots, presets
from gcp_jax.studies.optimization import (DIGITS_MODELS, config_from_workdir,
                                          tiny_model_config)
from gcp_jax.train import checkpoint as ckpt_lib
from gcp_jax.train import loop, reporting
from gcp_jax.train.schedules import create_lr_schedule, lr_per_epoch


class Schedule(NamedTuple):
  """A schedule of the study: its label, `config.schedule.name`, epochs."""
  label: str
  name: str
  epochs: int


# The GCP_Optimization ResNet schedules at the papers' lengths.
SCHEDULES = (Schedule("LRnorm", "lrnorm", 100),
             Schedule("LRfast", "lrfast", 30),
             Schedule("LRadju", "lradju", 50))
BASELINE = ("GAP", "LRnorm")      # whose final top-1 is the target
FIGURE = "convergence.png"


@dataclasses.dataclass(frozen=True)
class ConvergenceSettings:
  """How large the runs are.

  Attributes:
    image_size: digits resolution.
    width: backbone width of the resnet_tiny models.
    dim: d of the GCP and DropCov heads.
    batch_size: global training batch.
    steps_per_epoch: batches per epoch (`data.steps_per_epoch`; 0 = a full
      pass, 1347 // batch_size).
    eval_every: held-out evaluation every this many epochs (and at the
      end); a divisor of 30 and 50 puts the equal-budget points on the
      LRnorm curve.
    checkpoint_every: checkpoint cadence in epochs (and at the end).
    models: labels of `DIGITS_MODELS` to train (GAP among them: its
      LRnorm top-1 is the target).
  """
  image_size: int
  width: int
  dim: int
  batch_size: int
  steps_per_epoch: int
  eval_every: int
  checkpoint_every: int
  models: tuple[str, ...] = tuple(label for label, _ in DIGITS_MODELS)


PRESETS = {
    # The user setting: 7 batches of 64 an epoch (a third of the digits), so
    # LRnorm's 100 epochs are 700 steps.
    "default": ConvergenceSettings(image_size=32, width=16, dim=32,
                                   batch_size=64, steps_per_epoch=7,
                                   eval_every=2, checkpoint_every=10),
    # As fast as possible (the notebook test): one batch an epoch, two
    # models; 32 px, the smallest size the corruptions accept.
    "test": ConvergenceSettings(image_size=32, width=4, dim=8, batch_size=32,
                                steps_per_epoch=1, eval_every=10,
                                checkpoint_every=1000,
                                models=("GAP", "iSQRT")),
}


def preset(name: str) -> ConvergenceSettings:
  """The settings called `name` ('default' or 'test')."""
  return presets.choose(PRESETS, name)


@dataclasses.dataclass(frozen=True)
class Curve:
  """Held-out top-1 of one run against the epoch.

  Attributes:
    model, schedule: labels ("GAP", "LRfast", ...).
    epochs: float (n,), epochs done at each evaluation (step / steps per
      epoch).
    top1: float (n,), held-out top-1 there.
    lr: float (E,), the learning rate of each epoch 0..E-1.
    workdir: the run's workdir.
  """
  model: str
  schedule: str
  epochs: np.ndarray
  top1: np.ndarray
  lr: np.ndarray
  workdir: str


def run_config(settings: ConvergenceSettings,
               base_config: ml_collections.ConfigDict, model_name: str,
               schedule: Schedule) -> ml_collections.ConfigDict:
  """`base_config` with the model, size, schedule and cadence of one run
  (module docstring); `base_config` is not changed."""
  config = base_config.copy_and_resolve_references()
  config.model = tiny_model_config(model_name, settings.width, settings.dim)
  config.data.image_size = settings.image_size
  config.data.global_batch_size = settings.batch_size
  config.data.steps_per_epoch = settings.steps_per_epoch
  config.schedule = ml_collections.ConfigDict({"name": schedule.name})
  config.num_epochs = schedule.epochs
  config.num_train_steps = -1
  config.eval_every_epochs = settings.eval_every
  config.checkpoint_every_epochs = settings.checkpoint_every
  config.log_every_steps = (max(settings.steps_per_epoch, 1)
                            * settings.eval_every)
  return config


def digits_runs(settings: ConvergenceSettings,
                base_config: ml_collections.ConfigDict, output_dir: str
                ) -> dict[tuple[str, str], tuple[ml_collections.ConfigDict,
                                                 str]]:
  """{(model, schedule): (config, workdir)} of every run of the study."""
  return {(label, s.label): (
      run_config(settings, base_config, name, s),
      os.path.join(output_dir, "convergence", f"{label}_{s.label}"))
          for label, name in DIGITS_MODELS if label in settings.models
          for s in SCHEDULES}


def read_curve(model: str, schedule: str, config: ml_collections.ConfigDict,
               workdir: str) -> Curve:
  """The evaluations of a finished or running workdir
  (WORKDIR/metrics.jsonl) and the lr of each epoch of its config."""
  checkpoints = ckpt_lib.Checkpoints(workdir)
  try:
    steps_per_epoch = checkpoints.latest_meta()["steps_per_epoch"]
  finally:
    checkpoints.close()
  evals = reporting.read_metrics(workdir, "eval")
  if not evals:
    raise ValueError(f"{workdir} has no evaluations in "
                     f"{reporting.METRICS_FILE}; train it with "
                     f"eval_every_epochs > 0.")
  lr = lr_per_epoch(create_lr_schedule(config.schedule, config.learning_rate,
                                       1, config.num_epochs),
                    1, config.num_epochs)
  return Curve(model, schedule,
               np.array([e["step"] / steps_per_epoch for e in evals]),
               np.array([e["top1"] for e in evals]), np.asarray(lr), workdir)


def study_runs(settings: ConvergenceSettings,
               base_config: ml_collections.ConfigDict | None,
               output_dir: str,
               user_runs: Mapping[tuple[str, str], str] | None = None
               ) -> dict[tuple[str, str], tuple[ml_collections.ConfigDict,
                                                str]]:
  """{(model, schedule): (config, workdir)}: the digits runs, or with
  `user_runs` ({(model, schedule): workdir}) the user's, each config read
  from WORKDIR/config.json."""
  if user_runs:
    return {key: (config_from_workdir(workdir), workdir)
            for key, workdir in user_runs.items()}
  if base_config is None:
    raise ValueError("Training the digits runs needs a base_config.")
  return digits_runs(settings, base_config, output_dir)


def train_curves(settings: ConvergenceSettings,
                 base_config: ml_collections.ConfigDict | None,
                 output_dir: str,
                 user_runs: Mapping[tuple[str, str], str] | None = None
                 ) -> dict[tuple[str, str], Curve]:
  """Trains (or resumes, or reads when finished) every digits run, or
  with `user_runs` ({(model, schedule): workdir}) reads the user's runs,
  never training them; returns their curves."""
  runs = study_runs(settings, base_config, output_dir, user_runs)
  if not user_runs:
    for config, workdir in runs.values():
      loop.train_and_evaluate(config, workdir)
  return {key: read_curve(*key, config, workdir)
          for key, (config, workdir) in runs.items()}


def _top1_at(curve: Curve, epoch: float) -> float | None:
  """Top-1 of the evaluation at `epoch` (None if there is none)."""
  hits = np.flatnonzero(np.isclose(curve.epochs, epoch))
  return float(curve.top1[hits[-1]]) if hits.size else None


def summarize(curves: Mapping[tuple[str, str], Curve], output_dir: str,
              baseline: tuple[str, str] = BASELINE) -> list[dict[str, Any]]:
  """The table rows (module docstring), written with the curves to
  OUT/convergence.json and as text to OUT/convergence.txt."""
  if baseline not in curves:
    raise ValueError(f"No run {baseline} to take the target top-1 from; "
                     f"runs: {sorted(curves)}.")
  target = float(curves[baseline].top1[-1])
  rows = []
  for (model, schedule), c in curves.items():
    reached = np.flatnonzero(c.top1 >= target)
    norm = curves.get((model, "LRnorm"))
    rows.append({
        "model": model, "schedule": schedule,
        "epochs": float(c.epochs[-1]), "final_top1": float(c.top1[-1]),
        "best_top1": float(c.top1.max()),
        "lrnorm_same_epochs": (None if norm is None
                               else _top1_at(norm, c.epochs[-1])),
        "epochs_to_target": (float(c.epochs[reached[0]]) if reached.size
                             else None),
        "target": target, "target_run": "/".join(baseline)})
  results_io.atomic_write_json(os.path.join(output_dir, "convergence.json"), {
      "rows": rows,
      "curves": [{"model": c.model, "schedule": c.schedule,
                  "epochs": c.epochs.tolist(), "top1": c.top1.tolist(),
                  "lr": c.lr.tolist(), "workdir": c.workdir}
                 for c in curves.values()]})
  results_io.atomic_write_text(os.path.join(output_dir, "convergence.txt"),
                               format_table(rows))
  return rows


def format_table(rows: list[dict[str, Any]]) -> str:
  """The rows as an aligned text table (top-1 in %)."""
  def pct(x):
    return "-" if x is None else f"{100 * x:.1f}"

  target = rows[0]["target"] if rows else float("nan")
  run = rows[0]["target_run"] if rows else "?"
  lines = [f"target: final top-1 of {run} = {100 * target:.1f}%",
           f"{'model':<8} {'schedule':<8} {'epochs':>6} {'final':>6} "
           f"{'best':>6} {'LRnorm@same':>11} {'epochs to target':>16}"]
  for r in rows:
    reached = ("never" if r["epochs_to_target"] is None
               else f"{r['epochs_to_target']:g}")
    lines.append(f"{r['model']:<8} {r['schedule']:<8} {r['epochs']:>6g} "
                 f"{pct(r['final_top1']):>6} {pct(r['best_top1']):>6} "
                 f"{pct(r['lrnorm_same_epochs']):>11} {reached:>16}")
  return "\n".join(lines)


def plot_convergence(curves: Mapping[tuple[str, str], Curve],
                     output_dir: str) -> str:
  """One panel per schedule: held-out top-1 against the epoch, one line per
  model (GAP red, iSQRT blue, DropCov green), the target as a dashed line;
  a last panel: each schedule's learning rate (log scale). Writes
  OUT/convergence.png."""
  schedules = list(dict.fromkeys(s for _, s in curves))
  models = list(dict.fromkeys(m for m, _ in curves))
  fig = Figure(figsize=(4 * (len(schedules) + 1), 3.6))
  axes = fig.subplots(1, len(schedules) + 1)
  target = curves[BASELINE].top1[-1] if BASELINE in curves else None
  for ax, schedule in zip(axes, schedules):
    for i, model in enumerate(models):
      c = curves.get((model, schedule))
      if c is not None:
        ax.plot(c.epochs, c.top1, "o-", ms=2.5,
                color=plots.model_color(model, i), label=model)
    if target is not None:
      ax.axhline(target, ls="--", color="gray", lw=0.8,
                 label=f"{BASELINE[0]} {BASELINE[1]} final")
    ax.set_title(schedule)
    ax.set_xlabel("epoch")
    ax.set_ylabel("held-out top-1")
    ax.legend(fontsize=8)
  lr_axis = axes[-1]
  for schedule in schedules:
    c = next(c for (_, s), c in curves.items() if s == schedule)
    lr_axis.step(np.arange(len(c.lr)), c.lr, where="post", label=schedule)
  lr_axis.set_yscale("log")
  lr_axis.set_xlabel("epoch")
  lr_axis.set_title("learning rate")
  lr_axis.legend(fontsize=8)
  return plots.save_figure(fig, output_dir, FIGURE)
