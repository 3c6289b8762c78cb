"""Corruption robustness of a checkpoint (`main.py --mode=robustness`):
top-1 error on every (corruption, severity) cell of ImageNet-C, from the
released folders, tfds `imagenet2012_corrupted`, or corrupted on the fly
(`gcp_jax.data.robustness`), and CE, mCE and relative mCE
(`gcp_jax.analysis.robustness_metrics`).

Synopsis:
  results = run_robustness(config, workdir)
  results["summary"]["mce"], results["cells"]["fog/3"]["error"]

The checkpoint is loaded as `restore.evaluate` loads it (the workdir's
latest, or the `config.init_from` PyTorch / MindSpore file) and every cell
is one pass of the normal evaluation (`evaluate_batches`: every device,
padded batches masked out of the counts). Files, in WORKDIR/robustness/:
  results.json  written atomically after every finished cell (and the clean
                pass); a rerun skips the cells it holds, so an interrupted
                run resumes where it stopped. At the end it also holds the
                summary (CE, mCE, relative mCE, means per corruption and
                severity).
  results.csv   one row per cell: corruption, severity, error, top1, top5,
                count (the clean pass as corruption "clean", severity 0).
  errors.png    top-1 error against severity, one line per corruption.
Bad input (unknown corruption or severity, missing folder or severity,
classes other than the checkpoint's, a results file of other settings)
stops with one line before anything is written.
"""

import csv
import io
import json
import os
import sys
import time

import jax
import ml_collections
import numpy as np

from gcp_jax.analysis import robustness_metrics
from gcp_jax.analysis.results_io import atomic_write_bytes
from gcp_jax.errors import ConfigError
from gcp_jax.train.evaluation import evaluate_batches
from gcp_jax.train.reporting import Reporter
from gcp_jax.train.restore import restore_for_eval

RESULTS_DIR = "robustness"
CLEAN = "clean"


def cells_of(robustness: ml_collections.ConfigDict
             ) -> list[tuple[str, int]]:
  """The (corruption, severity) cells a robustness config asks for."""
  names = list(robustness.corruptions)
  if robustness.include_extra:
    names += [c for c in robustness_metrics.EXTRA_CORRUPTIONS
              if c not in names]
  return [(c, int(s)) for c in names for s in robustness.severities]


def cell_key(corruption: str, severity: int) -> str:
  return f"{corruption}/{severity}"


def _settings(config: ml_collections.ConfigDict, origin: dict) -> dict:
  """What the cells' values depend on; a results file of other settings is
  not resumed."""
  r = config.robustness
  return {"source": r.source, "data_dir": r.data_dir, "seed": r.seed,
          "max_images_per_cell": r.max_images_per_cell,
          "data": config.data.name, "data_data_dir": config.data.data_dir,
          "image_size": config.data.image_size,
          "resize_size": config.data.resize_size, **origin}


def _load(path: str, settings: dict) -> dict:
  if not os.path.exists(path):
    return {"settings": settings, "clean": None, "cells": {}}
  with open(path) as f:
    saved = json.load(f)
  if saved.get("settings") != settings:
    changed = sorted(k for k in set(settings) | set(saved.get("settings", {}))
                     if settings.get(k) != saved.get("settings", {}).get(k))
    raise ConfigError(
        f"{path} holds results of other settings (differing: {changed}); "
        f"use another --workdir or delete the file to start over.")
  return saved


def _csv(results: dict) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["corruption", "severity", "error", "top1", "top5",
                   "count"])
  rows = ([(CLEAN, 0, results["clean"])] if results["clean"] else [])
  rows += [(*key.split("/"), cell) for key, cell in results["cells"].items()]
  for corruption, severity, cell in rows:
    writer.writerow([corruption, severity, f"{cell['error']:.6f}",
                     f"{cell['top1']:.6f}", f"{cell['top5']:.6f}",
                     int(cell["count"])])
  return out.getvalue()


def plot_errors(results: dict, path: str) -> str:
  """errors.png: top-1 error against severity, one line per corruption,
  the clean error dashed."""
  from matplotlib.figure import Figure
  errors = _errors(results)
  fig = Figure(figsize=(7.5, 4.5))
  ax = fig.add_subplot()
  for i, (name, by_severity) in enumerate(errors.items()):
    severities = sorted(by_severity)
    ax.plot(severities, [100 * by_severity[s] for s in severities],
            marker="o", ms=3, lw=1.2, color=f"C{i % 10}",
            ls="-" if i < 10 else "--", label=name)
  if results["clean"]:
    ax.axhline(100 * results["clean"]["error"], color="k", ls=":", lw=1,
               label="clean")
  ax.set_xlabel("severity")
  ax.set_ylabel("top-1 error (%)")
  ax.set_xticks(robustness_metrics.SEVERITIES)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1, 0.5))
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=120)
  atomic_write_bytes(path, buffer.getvalue())
  return path


def _errors(results: dict) -> dict[str, dict[int, float]]:
  errors = {}
  for key, cell in results["cells"].items():
    corruption, severity = key.split("/")
    errors.setdefault(corruption, {})[int(severity)] = cell["error"]
  return errors


def _cell_metrics(metrics: dict[str, float]) -> dict[str, float]:
  cell = {k: float(v) for k, v in metrics.items()}
  cell["error"] = 1.0 - cell["top1"]
  return cell


def run_robustness(config: ml_collections.ConfigDict, workdir: str,
                   stream=sys.stdout) -> dict:
  """Evaluates the checkpoint on every cell of `config.robustness` that
  WORKDIR/robustness/results.json does not hold yet, then writes the
  summary, the CSV and the figure.

  Returns:
    The contents of results.json: {'settings', 'clean', 'cells':
    {'corruption/severity': {'error', 'top1', 'top5', 'loss', 'count'}},
    'summary'}.
  """
  from gcp_jax.data.corruptions import check_corruption_names
  cells = cells_of(config.robustness)
  check_corruption_names([c for c, _ in cells], [s for _, s in cells])
  from gcp_jax.data.robustness import create_robustness_data  # TensorFlow
  restored = restore_for_eval(config, workdir)
  data = create_robustness_data(
      config.robustness, config.data,
      class_names=restored.datasets.info.class_names,
      process_index=jax.process_index(), process_count=jax.process_count())
  data.check(cells)
  directory = os.path.join(workdir, RESULTS_DIR)
  path = os.path.join(directory, "results.json")
  results = _load(path, _settings(config, restored.origin))
  writer = jax.process_index() == 0

  def save():
    if writer:
      os.makedirs(directory, exist_ok=True)
      atomic_write_bytes(path, json.dumps(results, indent=1).encode())

  pending = [cell for cell in cells if cell_key(*cell) not in
             results["cells"]]
  total = len(cells) + 1
  done = total - len(pending) - (results["clean"] is None)
  reporter = Reporter(workdir, total, enabled=writer, stream=stream)
  reporter.message(f"robustness: {total} passes ({len(cells)} cells + "
                   f"clean), {done} already in {path}")
  reporter.progress(done, {})

  def evaluate(batches, images):
    start = time.monotonic()
    metrics = evaluate_batches(restored.eval_steps, restored.state, batches,
                               restored.mesh)
    return _cell_metrics(metrics), images / (time.monotonic() - start)

  if results["clean"] is None:
    if data.source == "on_the_fly":
      batches = data.batches(None, 0)
      images = data.num_images(*cells[0])
    else:
      batches = restored.datasets.eval_batches()
      images = restored.datasets.info.num_eval
    results["clean"], rate = evaluate(batches, images)
    save()
    done += 1
    reporter.progress(done, {"clean_error": results["clean"]["error"]},
                      images_per_second=rate)
  for corruption, severity in pending:
    cell, rate = evaluate(data.batches(corruption, severity),
                          data.num_images(corruption, severity))
    results["cells"][cell_key(corruption, severity)] = cell
    save()
    done += 1
    reporter.message(f"{corruption} severity {severity}: error "
                     f"{cell['error']:.4f} ({int(cell['count'])} images)")
    reporter.progress(done, {"error": cell["error"]},
                      images_per_second=rate)
  summary = robustness_metrics.summarize(_errors(results),
                                         results["clean"]["error"])
  results["summary"] = summary
  save()
  if writer:
    atomic_write_bytes(os.path.join(directory, "results.csv"),
                       _csv(results).encode())
    plot_errors(results, os.path.join(directory, "errors.png"))
  if summary["mce"] is not None:
    reporter.message(f"mCE {summary['mce']:.4f}, relative mCE "
                     f"{summary['relative_mce']:.4f}, clean error "
                     f"{summary['clean_error']:.4f}")
  reporter.close()
  return results
