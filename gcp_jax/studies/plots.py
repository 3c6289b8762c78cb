"""Figures of the optimization study, saved as PNG files.

  plot_lipschitz      loss and gradient-change bands vs training step (the
                      papers' Lipschitzness figure; GAP red, GCP blue,
                      DropCov green)
  plot_landscape_1d   loss along one filter-normalised direction
  plot_landscape_2d   loss contours on a 2-D grid, one panel per model
  plot_hessian        top eigenvalue (+- residual) and trace (+- s.e.)

Every function takes {model label: result} (in plotting order) and the
output directory, writes `FIGURES[name]` there and returns its path. Figures
are drawn on `matplotlib.figure.Figure` objects (no pyplot state), so this
works under any backend, headless included.
"""

import os
from typing import Mapping

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from gcp_jax.analysis.landscape import LandscapeResult
from gcp_jax.studies.summary import HessianSummary, ProbeBands

FIGURES = {"lipschitz": "lipschitzness.png",
           "landscape_1d": "landscape_1d.png",
           "landscape_2d": "landscape_2d.png",
           "hessian": "hessian.png"}
MODEL_COLORS = {"GAP": "tab:red", "iSQRT": "tab:blue", "DropCov": "tab:green"}
DPI = 120


def model_color(label: str, index: int) -> str:
  """The study's colour for `label`, else the index-th colour of the
  default cycle."""
  return MODEL_COLORS.get(label, f"C{index}")


def save_figure(fig: Figure, output_dir: str, filename: str) -> str:
  """Writes `fig` as OUTPUT_DIR/FILENAME (PNG) and returns the path."""
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, filename)
  fig.savefig(path, dpi=DPI, bbox_inches="tight")
  return path


def _save(fig: Figure, output_dir: str, name: str) -> str:
  return save_figure(fig, output_dir, FIGURES[name])


def plot_lipschitz(bands: Mapping[str, ProbeBands], output_dir: str) -> str:
  """Two panels vs training step: the band min..max over eta of
  L(X + eta g0), and of ||dL/dX(X + eta g0) - g0||, one shaded band per
  model (log scale)."""
  fig = Figure(figsize=(11, 4))
  axes = fig.subplots(1, 2)
  panels = (("loss", r"loss $L(X + \eta\, \nabla_X L)$"),
            ("grad_change",
             r"gradient change $\|\nabla_X L(X + \eta \nabla_X L)"
             r" - \nabla_X L(X)\|_2$"))
  for ax, (field, title) in zip(axes, panels):
    for i, (label, b) in enumerate(bands.items()):
      color = model_color(label, i)
      low, high = getattr(b, field + "_min"), getattr(b, field + "_max")
      ax.fill_between(b.steps, low, high, color=color, alpha=0.3,
                      label=label)
      ax.plot(b.steps, low, color=color, lw=0.8)
      ax.plot(b.steps, high, color=color, lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_title(title, fontsize=10)
    ax.legend()
  modes = sorted({b.bn_mode for b in bands.values()})
  fig.suptitle(f"Range over the step sizes eta along the gradient after the "
               f"stem (BN mode: {', '.join(modes)})", fontsize=10)
  return _save(fig, output_dir, "lipschitz")


def plot_landscape_1d(results: Mapping[str, LandscapeResult],
                      output_dir: str) -> str:
  """Loss (log scale) along each model's filter-normalised direction."""
  fig = Figure(figsize=(5.5, 4))
  ax = fig.subplots()
  for i, (label, r) in enumerate(results.items()):
    ax.plot(r.axes[0], r.loss, "o-", ms=3, color=model_color(label, i),
            label=label)
  ax.set_yscale("log")
  ax.set_xlabel(r"$\alpha$ (filter-normalised direction)")
  ax.set_ylabel("loss")
  ax.set_title("1-D loss landscape (BN: "
               f"{_modes(results)})", fontsize=10)
  ax.legend()
  return _save(fig, output_dir, "landscape_1d")


def _modes(results: Mapping[str, LandscapeResult]) -> str:
  return ", ".join(sorted({r.bn_mode for r in results.values()}))


def plot_landscape_2d(results: Mapping[str, LandscapeResult],
                      output_dir: str) -> str:
  """Filled loss contours, one panel per model, on shared log-spaced
  levels (so the panels compare), the origin marked."""
  losses = np.concatenate([r.loss.ravel() for r in results.values()])
  levels = np.geomspace(losses.min(), losses.max(), 15)
  norm = mcolors.LogNorm(levels[0], levels[-1])
  fig = Figure(figsize=(3.6 * len(results) + 1.5, 3.8))
  axes = np.atleast_1d(fig.subplots(1, len(results), sharey=True))
  for ax, (label, r) in zip(axes, results.items()):
    filled = ax.contourf(r.axes[0], r.axes[1], r.loss.T, levels=levels,
                         norm=norm, cmap="viridis")
    ax.plot(0, 0, "w+", ms=10)
    ax.set_title(label)
    ax.set_xlabel(r"$\alpha$")
    ax.set_aspect("equal")
  axes[0].set_ylabel(r"$\beta$")
  fig.colorbar(filled, ax=list(axes), label="loss", ticks=levels[::2],
               format="%.3g")
  fig.suptitle(f"2-D loss landscapes (BN: {_modes(results)})", fontsize=10)
  return _save(fig, output_dir, "landscape_2d")


def plot_hessian(hessians: Mapping[str, HessianSummary],
                 output_dir: str) -> str:
  """Bars of the top eigenvalue (error bar: the Lanczos residual norm, an
  eigenvalue lies within it) and of the Hutchinson trace (error bar: one
  standard error)."""
  fig = Figure(figsize=(9, 3.8))
  axes = fig.subplots(1, 2)
  labels = list(hessians)
  colors = [model_color(label, i) for i, label in enumerate(labels)]
  panels = (("top_eigenvalue", "eigenvalue_residual",
             "top eigenvalue (\u00b1 residual)"),
            ("trace", "trace_stderr", "trace (\u00b1 1 s.e.)"))
  for ax, (value, error, title) in zip(axes, panels):
    ax.bar(labels, [getattr(h, value) for h in hessians.values()],
           yerr=[getattr(h, error) for h in hessians.values()],
           color=colors, alpha=0.8, capsize=6)
    ax.set_title(title, fontsize=10)
  some = next(iter(hessians.values()))
  fig.suptitle(f"Hessian of the loss over {some.num_samples} samples "
               f"(parameters: {some.block or 'all'}, BN: {some.bn_mode})",
               fontsize=10)
  return _save(fig, output_dir, "hessian")
