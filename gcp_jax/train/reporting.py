"""Metrics out: TensorBoard event files and a JSON-lines file in the
workdir, and a console line with progress and ETA. Only process 0 writes.

Synopsis:
  reporter = Reporter(workdir, total_steps, enabled=jax.process_index() == 0)
  reporter.write("train", step, {"loss": 0.7, "top1": 0.8})
  reporter.progress(step, {"loss": 0.7}, images_per_second=1234.0)
  reporter.close()
  history = read_metrics(workdir, "eval")   # [{"step": 21, "top1": ...}]

WORKDIR/metrics.jsonl holds one line per `write`: {"split", "step", and the
scalars}. A resumed run appends, and may repeat the steps after its last
checkpoint; `read_metrics` keeps the last line of each step.
"""

import json
import os
import sys
import time

import numpy as np


METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: str, split: str) -> list[dict[str, float]]:
  """The scalars `Reporter.write` wrote for `split` in `workdir`, one dict
  per step ({"step": int, name: value}), sorted by step; for a step written
  more than once (a resumed run), the last write.

  Raises:
    FileNotFoundError: the workdir has no WORKDIR/metrics.jsonl.
  """
  by_step: dict[int, dict[str, float]] = {}
  with open(os.path.join(workdir, METRICS_FILE)) as f:
    lines = f.read().split("\n")
  for i, line in enumerate(lines):
    try:
      record = json.loads(line) if line.strip() else None
    except json.JSONDecodeError:
      if i < len(lines) - 1:   # only a line cut off by a kill may be partial
        raise
      record = None
    if record is not None and record.pop("split") == split:
      by_step[record["step"]] = record
  return [by_step[step] for step in sorted(by_step)]


class Reporter:
  """Scalars to `WORKDIR/tensorboard/{train,eval}` and progress lines."""

  def __init__(self, workdir: str, total_steps: int, enabled: bool = True,
               stream=sys.stdout):
    self._enabled = enabled
    self._total = total_steps
    self._stream = stream
    self._start = time.monotonic()
    self._start_step: int | None = None
    self._writers = {}
    self._dir = os.path.join(workdir, "tensorboard")
    self._jsonl = os.path.join(workdir, METRICS_FILE)

  def _writer(self, split: str):
    if split not in self._writers:
      from gcp_jax.data.tensorflow_cpu import tf  # only for event files
      self._writers[split] = tf.summary.create_file_writer(
          os.path.join(self._dir, split))
    return self._writers[split]

  def write(self, split: str, step: int, scalars: dict[str, float]) -> None:
    """Writes scalars of `split` ('train' or 'eval') at `step`."""
    if not self._enabled:
      return
    from gcp_jax.data.tensorflow_cpu import tf
    with self._writer(split).as_default():
      for name, value in scalars.items():
        tf.summary.scalar(name, float(value), step=step)
    self._writer(split).flush()
    record = {"split": split, "step": int(step),
              **{k: float(v) for k, v in scalars.items()}}
    with open(self._jsonl, "a") as f:
      f.write(json.dumps(record) + "\n")

  def progress(self, step: int, scalars: dict[str, float],
               images_per_second: float | None = None) -> None:
    """Prints `[#####.....] step/total (pct) metrics img/s ETA`."""
    if not self._enabled:
      return
    now = time.monotonic()
    if self._start_step is None:
      self._start_step, self._start = step, now
    done = step / max(self._total, 1)
    bar = "#" * int(20 * done) + "." * (20 - int(20 * done))
    rate = (step - self._start_step) / max(now - self._start, 1e-9)
    eta = (self._total - step) / rate if rate > 0 else float("nan")
    parts = [f"[{bar}] {step}/{self._total} ({100 * done:.0f}%)"]
    parts += [f"{k} {v:.4g}" for k, v in scalars.items()]
    if images_per_second is not None:
      parts.append(f"{images_per_second:.0f} img/s")
    parts.append(f"ETA {_duration(eta)}")
    print("  ".join(parts), file=self._stream, flush=True)

  def message(self, text: str) -> None:
    if self._enabled:
      print(text, file=self._stream, flush=True)

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()


def _duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
