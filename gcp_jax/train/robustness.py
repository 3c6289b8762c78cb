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
`run_perturbations` (source "imagenet_p") does the same for ImageNet-P:
flip probability and top-5 distance per perturbation, resumable, in
WORKDIR/robustness/perturbations.json.
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
from gcp_jax.analysis.results_io import atomic_write_bytes, atomic_write_json
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
      atomic_write_json(path, results)

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


# ImageNet-P ------------------------------------------------------------------

def make_logits_step(model, mesh):
  """Compiled data-parallel logits of a (global) batch of images."""
  from jax.sharding import PartitionSpec as P
  from gcp_jax import backend
  from gcp_jax.parallel import DATA_AXIS
  from gcp_jax.train.steps import view_averaged_logits

  def per_device(state, images):
    return view_averaged_logits(model, state.variables(), images)
  return backend.jit(jax.shard_map(per_device, mesh=mesh,
                                   in_specs=(P(), P(DATA_AXIS)),
                                   out_specs=P(DATA_AXIS)))


def _frame_logits(step, state, mesh, frames: np.ndarray,
                  batch_size: int) -> np.ndarray:
  """Logits (n, classes) of n frames, in global batches of `batch_size`
  (the last one padded); every process passes the same frames and feeds
  its slice of each batch."""
  from jax.experimental import multihost_utils
  from gcp_jax import parallel
  n = len(frames)
  local = batch_size // jax.process_count()
  first = jax.process_index() * local
  out = []
  for start in range(0, n, batch_size):
    chunk = frames[start:start + batch_size]
    padded = np.zeros((batch_size,) + frames.shape[1:], np.float32)
    padded[:len(chunk)] = chunk
    batch = parallel.host_batch_to_global(
        mesh, {"image": padded[first:first + local]})
    logits = multihost_utils.process_allgather(step(state, batch["image"]),
                                               tiled=True)
    out.append(np.asarray(logits)[:len(chunk)])
  return np.concatenate(out)


def run_perturbations(config: ml_collections.ConfigDict, workdir: str,
                      stream=sys.stdout) -> dict:
  """ImageNet-P stability of the checkpoint (`robustness.source =
  "imagenet_p"`, videos in `robustness.data_dir`): flip probability and
  top-5 distance per perturbation (docs/method.md §12.3), unnormalised,
  in WORKDIR/robustness/perturbations.json, written after each
  perturbation; a rerun skips the finished ones.

  Returns:
    {'settings', 'perturbations': {name: {'fp', 't5d', 'sequences',
    'frames'}}, 'mean_fp', 'mean_t5d'}.
  """
  from gcp_jax.data import perturbations as imagenet_p
  r = config.robustness
  names = list(r.perturbations)
  if not r.data_dir:
    raise ConfigError("robustness.source='imagenet_p' needs "
                      "robustness.data_dir, the ImageNet-P folder holding "
                      "PERTURBATION/CLASS/VIDEO.mp4.")
  root = os.path.expanduser(r.data_dir)
  restored = restore_for_eval(config, workdir)
  class_names = restored.datasets.info.class_names
  imagenet_p.check_perturbation_dir(root, names, class_names)
  directory = os.path.join(workdir, RESULTS_DIR)
  path = os.path.join(directory, "perturbations.json")
  saved = _load(path, _settings(config, restored.origin))
  results = {"settings": saved["settings"],
             "perturbations": saved.get("perturbations", {})}
  writer = jax.process_index() == 0

  def save():
    if writer:
      os.makedirs(directory, exist_ok=True)
      atomic_write_json(path, results)

  step = make_logits_step(restored.model, restored.mesh)
  done = sum(n in results["perturbations"] for n in names)
  reporter = Reporter(workdir, len(names), enabled=writer, stream=stream)
  reporter.message(f"perturbations: {len(names)}, {done} already in {path}")
  reporter.progress(done, {})
  for name in names:
    if name in results["perturbations"]:
      continue
    logits = [
        _frame_logits(step, restored.state, restored.mesh, frames,
                      config.data.eval_batch_size)
        for frames, _ in imagenet_p.sequences(
            root, name, class_names, image_size=config.data.image_size,
            limit=r.max_images_per_cell, seed=r.seed)]
    lengths = {len(x) for x in logits}
    if len(lengths) != 1:
      raise ValueError(f"The {name} videos have different lengths "
                       f"{sorted(lengths)}; ImageNet-P sequences of one "
                       f"perturbation have equal lengths.")
    logits = np.stack(logits)
    noise = name in imagenet_p.NOISE_PERTURBATIONS
    results["perturbations"][name] = {
        "fp": robustness_metrics.flip_probability(logits.argmax(-1), noise),
        "t5d": robustness_metrics.top5_distance(logits, noise),
        "sequences": int(logits.shape[0]), "frames": int(logits.shape[1])}
    save()
    done += 1
    reporter.progress(done, {"fp": results["perturbations"][name]["fp"]})
  finished = {n: results["perturbations"][n] for n in names}
  results["mean_fp"] = robustness_metrics.mean_over_perturbations(
      {n: v["fp"] for n, v in finished.items()})
  results["mean_t5d"] = robustness_metrics.mean_over_perturbations(
      {n: v["t5d"] for n, v in finished.items()})
  save()
  reporter.close()
  return results
