"""Helpers shared by the hand-run benchmarks: median wall times, progress
to stderr, plain or markdown tables, the run header and the agreement check
between variants."""

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np


def jax_run_header() -> str:
  """One line naming the JAX build, backend, CPUs, `XLA_FLAGS`, the UTC
  time and the load average at start, for the top of a benchmark's output."""
  import jax  # the callers have imported it already
  return (f"jax {jax.__version__}, backend {jax.default_backend()}, "
          f"{os.cpu_count()} CPUs, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
          f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; load "
          f"average at start {os.getloadavg()[0]:.2f}.")


def max_rel_diff(a, b) -> float:
  """max |a - b| / max |b| over all elements (arrays of any backend)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]],
          markdown: bool) -> str:
  if markdown:
    lines = [headers, ["---:"] * len(headers), *rows]
    return "\n".join("| " + " | ".join(r) + " |" for r in lines)
  widths = [max(len(r[i]) for r in [headers, *rows])
            for i in range(len(headers))]
  return "\n".join("  ".join(c.rjust(wd) for c, wd in zip(r, widths))
                   for r in [headers, *rows])


def interleaved_median_ms(calls: Sequence[tuple[Callable[[], object], int]],
                          rounds: int) -> list[float]:
  """Median wall time in ms of each call, timed in interleaved rounds.

  Each (call, n) is run twice untimed (warm-up), then every round times n
  calls of each entry in turn, so all entries see the same machine state.
  """
  for call, _ in calls:
    call()
    call()
  times = [[] for _ in calls]
  for _ in range(rounds):
    for (call, n), samples in zip(calls, times):
      for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
  return [1e3 * statistics.median(samples) for samples in times]


def median_ms(call: Callable[[], object], repeats: int) -> float:
  """Median wall time in ms of `repeats` calls after two warm-up calls."""
  return interleaved_median_ms([(call, 1)], repeats)[0]
