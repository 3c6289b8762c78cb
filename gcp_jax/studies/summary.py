"""The numbers the optimization study reports, and its summary table.

Probe bands. For the gradient-direction probes of one training run (one
probe per probed step t, `gcp_jax.analysis.gradient_probe`), the band at t
is the min and max over the eta grid of

  loss(eta)         = L(X + eta g0)
  grad_change(eta)  = ||dL/dX(X + eta g0) - g0||_2

(the shaded band per model of the papers' Lipschitzness figure). Its RANGE
is max - min: how much the loss, or the gradient, changes along the
gradient direction; smaller means a smoother loss / a more predictive
gradient.

Landscape rise. For a landscape grid (1-D or 2-D) whose axes contain 0:

  rise = mean(loss at the grid's boundary points) - loss at the origin

(1-D: the two end points; 2-D: the perimeter). Smaller means flatter over
the same filter-normalised distance.

Table rows (`summary_row`), one per model:

  top1                      final held-out top-1
  loss_range_last           loss band range at the last probe
  loss_range_mean           mean of the loss band range over all probes
  grad_change_range_last    the same for the gradient change
  grad_change_range_mean
  rise_1d, rise_2d          landscape rise of the 1-D and 2-D grids
  top_eigenvalue            Lanczos top Hessian eigenvalue
  eigenvalue_residual       ||H u - lambda u|| of its vector u: an
                            eigenvalue of H lies within this distance
  trace, trace_stderr       Hutchinson trace and its standard error

A value that was not measured (e.g. a user's run without probe file) is
None.
"""

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from gcp_jax.analysis.gradient_probe import (GradientProbeResult,
                                             lipschitz_band)
from gcp_jax.analysis.landscape import LandscapeResult


@dataclasses.dataclass(frozen=True)
class ProbeBands:
  """Min / max over eta of the probes of one run, in step order.

  Attributes:
    steps: (P,) training steps of the probed (pre-update) weights.
    loss_min, loss_max: (P,) band of L(X + eta g0).
    grad_change_min, grad_change_max: (P,) band of the gradient change.
    bn_mode: BN mode of the probes.
  """
  steps: np.ndarray
  loss_min: np.ndarray
  loss_max: np.ndarray
  grad_change_min: np.ndarray
  grad_change_max: np.ndarray
  bn_mode: str

  @property
  def loss_range(self) -> np.ndarray:
    """(P,) loss_max - loss_min."""
    return self.loss_max - self.loss_min

  @property
  def grad_change_range(self) -> np.ndarray:
    """(P,) grad_change_max - grad_change_min."""
    return self.grad_change_max - self.grad_change_min


def probe_bands(results: Sequence[GradientProbeResult]) -> ProbeBands:
  """The bands of a run's probes (at least one, all with a step and one BN
  mode), sorted by step."""
  if not results:
    raise ValueError("No gradient-probe results to summarise.")
  modes = {r.bn_mode for r in results}
  if len(modes) != 1 or any(r.step is None for r in results):
    raise ValueError(f"Probe results must share one BN mode and carry their "
                     f"step; got modes {sorted(modes)}.")
  bands = sorted((lipschitz_band(r) for r in results), key=lambda b: b.step)

  def column(name):
    return np.array([getattr(b, name) for b in bands], np.float64)
  return ProbeBands(np.array([b.step for b in bands]), column("loss_min"),
                    column("loss_max"), column("grad_change_min"),
                    column("grad_change_max"), modes.pop())


def landscape_rise(result: LandscapeResult) -> float:
  """Mean loss on the boundary of the grid minus the loss at the origin
  (every axis must contain 0 and the grid must be complete)."""
  if not result.complete:
    raise ValueError("The landscape is not complete.")
  origin = []
  for axis in result.axes:
    i = int(np.argmin(np.abs(axis)))
    if not math.isclose(float(axis[i]), 0.0, abs_tol=1e-12):
      raise ValueError(f"A landscape axis does not contain 0: {axis}.")
    origin.append(i)
  boundary = np.zeros(result.loss.shape, bool)
  for k in range(result.loss.ndim):
    edge = [slice(None)] * result.loss.ndim
    for end in (0, -1):
      edge[k] = end
      boundary[tuple(edge)] = True
  return float(np.mean(result.loss[boundary]) - result.loss[tuple(origin)])


@dataclasses.dataclass(frozen=True)
class HessianSummary:
  """Top eigenvalue and trace of a model's loss Hessian.

  Attributes:
    top_eigenvalue: Lanczos estimate (algebraically largest).
    eigenvalue_residual: ||H u - lambda u|| of the returned unit vector u.
    trace: Hutchinson estimate (mean of v^T H v, Rademacher v).
    trace_stderr: its standard error.
    num_probes: Hutchinson vectors.
    lanczos_steps: Lanczos iterations.
    num_samples: examples the loss averages over.
    num_batches: batches they came in.
    dim: parameters in the block.
    block: the block's path expression (None = every parameter).
    bn_mode: 'batch' or 'running'.
  """
  top_eigenvalue: float
  eigenvalue_residual: float
  trace: float
  trace_stderr: float
  num_probes: int
  lanczos_steps: int
  num_samples: int
  num_batches: int
  dim: int
  block: str | None
  bn_mode: str


def _last_and_mean(values: np.ndarray | None
                   ) -> tuple[float | None, float | None]:
  if values is None:
    return None, None
  return float(values[-1]), float(np.mean(values))


def summary_row(label: str, top1: float, bands: ProbeBands | None,
                landscape_1d: LandscapeResult | None,
                landscape_2d: LandscapeResult | None,
                hessian: HessianSummary | None) -> dict[str, Any]:
  """One table row (keys in the module docstring)."""
  loss_last, loss_mean = _last_and_mean(
      None if bands is None else bands.loss_range)
  grad_last, grad_mean = _last_and_mean(
      None if bands is None else bands.grad_change_range)
  row = {"model": label, "top1": float(top1),
         "loss_range_last": loss_last, "loss_range_mean": loss_mean,
         "grad_change_range_last": grad_last,
         "grad_change_range_mean": grad_mean}
  for key, result in (("rise_1d", landscape_1d), ("rise_2d", landscape_2d)):
    row[key] = None if result is None else landscape_rise(result)
  for key in ("top_eigenvalue", "eigenvalue_residual", "trace",
              "trace_stderr"):
    row[key] = None if hessian is None else float(getattr(hessian, key))
  return row


# (header, keys of the row shown in the cell, format)
_COLUMNS = (
    ("model", ("model",), "{}"),
    ("top-1", ("top1",), "{:.3f}"),
    ("loss range last", ("loss_range_last",), "{:.4g}"),
    ("loss range mean", ("loss_range_mean",), "{:.4g}"),
    ("grad change last", ("grad_change_range_last",), "{:.3g}"),
    ("grad change mean", ("grad_change_range_mean",), "{:.3g}"),
    ("rise 1-D", ("rise_1d",), "{:.3g}"),
    ("rise 2-D", ("rise_2d",), "{:.3g}"),
    ("top eig. (+-res.)", ("top_eigenvalue", "eigenvalue_residual"),
     "{:.4g} +- {:.2g}"),
    ("trace +- s.e.", ("trace", "trace_stderr"), "{:.4g} +- {:.2g}"),
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
  """A fixed-width text table of `summary_row` rows ('-' = not measured)."""
  def cell(row, keys, fmt):
    values = [row[k] for k in keys]
    return "-" if any(v is None for v in values) else fmt.format(*values)
  table = [[header for header, _, _ in _COLUMNS]]
  table += [[cell(row, keys, fmt) for _, keys, fmt in _COLUMNS]
            for row in rows]
  widths = [max(len(line[j]) for line in table) for j in range(len(_COLUMNS))]
  lines = ["  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                     for j, (c, w) in enumerate(zip(line, widths)))
           for line in table]
  lines.insert(1, "-" * len(lines[0]))
  return "\n".join(lines)
