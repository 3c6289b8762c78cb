"""GAP vs GCP vs DropCov under the optimization analyses (docs/method.md §10).

What notebooks/loss_landscape.ipynb calls, in order:

  settings = preset("default")                    # or "test"
  models = train_models(settings, base_config, out)
  # or: train_models(settings, None, out, user_runs={"GAP": "/runs/gap"})
  landscapes = compute_landscapes(models, settings, out)
  hessians = compute_hessians(models, settings, out)
  rows = summarize(models, landscapes, hessians, settings, out)

Models. `digits_runs` makes three configs from one base config (e.g.
configs/default.py), identical but for the head: resnet_tiny_gap,
resnet_tiny_isqrt and resnet_tiny_dropcov, each with the backbone width
`settings.width` (and d = `settings.dim` for the two second-order heads;
GAP keeps the registry's stride-2 layer4, as the papers' GAP baselines do,
the second-order heads stride 1). Same seed, data, optimiser and schedule;
the gradient-direction probe records every `settings.probe_every` in-epoch
steps (`gcp_jax.train.probe_hook`, WORKDIR/gradient_probe.json). Workdirs
are OUT/runs/<label>; a finished workdir is loaded, not retrained
(`train_and_evaluate` resumes at its last step and returns). `user_runs`
({label: workdir}) analyses a user's finished runs instead: each config is
read from WORKDIR/config.json, nothing is trained, the probe file is used
when present.

Analysis data. The first `n` global batches of epoch 0 of each model's
training stream (augmented as in training; full, equal-shaped batches, so
'batch' BN mode and the Hessian accept them), n = landscape_batches or
hessian_batches. One process only (the batches are this host's).

Landscapes (`gcp_jax.analysis.landscape`). 1-D along one, 2-D along two
filter-normalised random directions (seed `settings.seed`; bias and BN
leaves fixed, `one_d='zero'`; running statistics fixed), axes
linspace(-radius, radius, n); loss and top-1 over the analysis batches in
BN mode `settings.bn_mode` ('running' by default), cached (resumable) in
OUT/landscape_cache.

Hessian (`gcp_jax.analysis.hessian`, `spectral`). Of the mean loss over
`hessian_batches` batches, w.r.t. the parameters `settings.hessian_block`
(None = all; the presets take the head, see `PRESETS`), BN mode
`settings.bn_mode`: top eigenvalue by Lanczos (`lanczos_steps`) with its
residual, trace by Hutchinson (`hutchinson_probes` Rademacher vectors) with
its standard error.

Files written to OUT: landscape_<label>_{1d,2d}.json, hessian.json,
probe_bands.json, summary.json (settings + table rows), summary.txt.
"""

import dataclasses
import itertools
import json
import os
import re
from typing import Any, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from flax import linen as nn

from gcp_jax import parallel
from gcp_jax.analysis import (gradient_probe, hessian, landscape, results_io,
                              spectral)
from gcp_jax.data.pipeline import create_datasets
from gcp_jax.model_config import published_config
from gcp_jax.studies import presets, summary
from gcp_jax.train import loop, probe_hook, restore

# label -> published model name; the plots colour the labels GAP red, GCP blue,
# DropCov green
DIGITS_MODELS = (("GAP", "resnet_tiny_gap"), ("iSQRT", "resnet_tiny_isqrt"),
                 ("DropCov", "resnet_tiny_dropcov"))
LANDSCAPE_CACHE = "landscape_cache"


@dataclasses.dataclass(frozen=True)
class StudySettings:
  """How much to train and measure.

  Attributes:
    image_size: training / analysis resolution of the digits.
    width: backbone width of the resnet_tiny models.
    dim: d of the GCP and DropCov heads.
    num_epochs: training length.
    lr_milestones: epochs at which the LR is multiplied by 0.1 (the base
      config's LR); () = constant LR.
    probe_every: K, the probe runs at in-epoch steps 0, K, 2K, ...
    num_etas: probe step sizes, linspace(eta_min, eta_max, num_etas).
    eta_min, eta_max: probe grid ends (the reference's 0.1 and 75).
    probe_bn_mode: BN mode of the probe ('batch' = the reference).
    landscape_batches: analysis batches of the landscapes.
    landscape_points_1d: points of the 1-D axis (odd: 0 is on the grid).
    landscape_points_2d: points per axis of the 2-D grid (odd).
    landscape_radius: the axes span [-radius, radius].
    hessian_batches: analysis batches the Hessian averages over.
    lanczos_steps: Lanczos iterations for the top eigenvalue.
    hutchinson_probes: Rademacher vectors of the trace estimate.
    hessian_block: parameters of the Hessian, a path expression of
      `gcp_jax.analysis.hessian` (e.g. 'head', 'layer4'); None = all.
    bn_mode: BN mode of the landscapes and the Hessian.
    seed: seed of the landscape directions and the Hessian's vectors.
  """
  image_size: int
  width: int
  dim: int
  num_epochs: int
  lr_milestones: tuple[int, ...]
  probe_every: int
  num_etas: int
  landscape_batches: int
  landscape_points_1d: int
  landscape_points_2d: int
  hessian_batches: int
  lanczos_steps: int
  hutchinson_probes: int
  hessian_block: str | None = None
  eta_min: float = 0.1
  eta_max: float = 75.0
  probe_bn_mode: str = "batch"
  landscape_radius: float = 1.0
  bn_mode: str = "running"
  seed: int = 0

  def __post_init__(self):
    if self.landscape_points_1d % 2 == 0 or self.landscape_points_2d % 2 == 0:
      raise ValueError("Landscape axes need an odd number of points, so "
                       "that the trained weights (0) are on the grid.")


PRESETS = {
    # The user setting: a few minutes on 2 CPU cores for everything. The
    # Hessian covers the head only: XLA:CPU runs convolution gradients
    # inside loops (Lanczos, Hutchinson) far slower than outside
    # (jax-ml/jax#12868; benchmarks/RESULTS.md, "Loss-landscape notebook"),
    # so whole-model spectra take minutes per model on CPU; set
    # hessian_block=None on a GPU.
    "default": StudySettings(
        image_size=32, width=16, dim=32, num_epochs=8, lr_milestones=(6,),
        probe_every=10, num_etas=4, landscape_batches=2,
        landscape_points_1d=21, landscape_points_2d=9, hessian_batches=4,
        lanczos_steps=20, hutchinson_probes=30, hessian_block="head"),
    # As fast as possible (the notebook test).
    "test": StudySettings(
        image_size=16, width=8, dim=16, num_epochs=1, lr_milestones=(),
        probe_every=10, num_etas=3, landscape_batches=1,
        landscape_points_1d=3, landscape_points_2d=3, hessian_batches=1,
        lanczos_steps=3, hutchinson_probes=2, hessian_block="head"),
}


def preset(name: str) -> StudySettings:
  """The settings called `name` ('default' or 'test')."""
  return presets.choose(PRESETS, name)


@dataclasses.dataclass(frozen=True)
class ModelRun:
  """A model to analyse: a label, its training config and its workdir."""
  label: str
  config: ml_collections.ConfigDict
  workdir: str


def tiny_model_config(model_name: str, width: int, dim: int
                      ) -> ml_collections.ConfigDict:
  """`config.model` of the published resnet_tiny model `model_name` with
  backbone width `width` and, for a second-order head, d = `dim`."""
  model = published_config(model_name)
  changes = {"backbone_options": {"width": width}}
  if model.head != "gap":
    changes["dim"] = dim
  return ml_collections.ConfigDict(model.replace(**changes).as_dict())


def digits_config(settings: StudySettings,
                  base_config: ml_collections.ConfigDict,
                  model_name: str) -> ml_collections.ConfigDict:
  """`base_config` with the model, size, schedule and probe of `settings`
  (see the module docstring); `base_config` is not changed."""
  config = base_config.copy_and_resolve_references()
  config.model = tiny_model_config(model_name, settings.width, settings.dim)
  config.data.image_size = settings.image_size
  config.num_epochs = settings.num_epochs
  config.schedule = ml_collections.ConfigDict(
      {"name": "step", "milestones": settings.lr_milestones, "gamma": 0.1}
      if settings.lr_milestones else {"name": "constant"})
  config.gradient_probe.update(
      every_steps=settings.probe_every, num_etas=settings.num_etas,
      eta_min=settings.eta_min, eta_max=settings.eta_max,
      bn_mode=settings.probe_bn_mode)
  return config


def digits_runs(settings: StudySettings,
                base_config: ml_collections.ConfigDict,
                output_dir: str) -> list[ModelRun]:
  """The GAP, iSQRT and DropCov runs, workdirs OUT/runs/<label>."""
  return [ModelRun(label, digits_config(settings, base_config, name),
                   os.path.join(output_dir, "runs", label))
          for label, name in DIGITS_MODELS]


def _tuples(value: Any) -> Any:
  """JSON lists back to the tuples the configs hold."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def config_from_workdir(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with (WORKDIR/config.json, written by
  `train_and_evaluate`)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist: point user_runs at workdirs written by "
        f"gcp_jax training (main.py --mode=train).")
  with open(path) as f:
    return ml_collections.ConfigDict(_tuples(json.load(f)))


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A trained model ready for the analyses.

  Attributes:
    label, config, workdir: as in its `ModelRun`.
    model: the Flax module (BN bound to the training mesh axis).
    variables: {'params', 'batch_stats'} of the latest checkpoint.
    step: its training step.
    top1: held-out top-1 of those weights.
    bands: the probe bands over training (None without a probe file).
  """
  label: str
  config: ml_collections.ConfigDict
  workdir: str
  model: nn.Module
  variables: dict[str, Any]
  step: int
  top1: float
  bands: summary.ProbeBands | None


def load_model(run: ModelRun, train: bool) -> TrainedModel:
  """Trains `run` to its end first if `train` (a finished workdir returns
  at once), then loads its latest checkpoint and probe file."""
  metrics = (loop.train_and_evaluate(run.config, run.workdir).eval_metrics
             if train else {})
  model, state = restore.load_checkpoint(run.config, run.workdir)
  if not metrics:
    metrics = restore.evaluate(run.config, run.workdir)
  probe_path = os.path.join(run.workdir, probe_hook.PROBE_FILE)
  bands = (summary.probe_bands(gradient_probe.load_results(probe_path))
           if os.path.exists(probe_path) else None)
  return TrainedModel(run.label, run.config, run.workdir, model,
                      state.variables(), int(jax.device_get(state.step)),
                      float(metrics["top1"]), bands)


def train_models(settings: StudySettings,
                 base_config: ml_collections.ConfigDict | None,
                 output_dir: str,
                 user_runs: Mapping[str, str] | None = None
                 ) -> list[TrainedModel]:
  """The digits GAP / iSQRT / DropCov models (trained, or loaded when
  their workdirs are finished), or with `user_runs` ({label: workdir}) the
  user's finished runs, never trained here."""
  if user_runs:
    runs = [ModelRun(label, config_from_workdir(workdir), workdir)
            for label, workdir in user_runs.items()]
  elif base_config is None:
    raise ValueError("Training the digits models needs a base_config.")
  else:
    runs = digits_runs(settings, base_config, output_dir)
  return [load_model(run, train=not user_runs) for run in runs]


def analysis_batches(config: ml_collections.ConfigDict, count: int
                     ) -> list[dict[str, np.ndarray]]:
  """The first `count` batches {'image', 'label'} of the training stream
  of epoch 0 of `config.data`."""
  stream = create_datasets(config.data).train_batches(0)
  batches = [{"image": b["image"], "label": b["label"]}
             for b in itertools.islice(stream, count)]
  if len(batches) < count:
    raise ValueError(f"An epoch has only {len(batches)} batches; "
                     f"{count} analysis batches were asked for.")
  return batches


def file_label(label: str) -> str:
  """`label` reduced to characters safe in a file name."""
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def landscape_axes(settings: StudySettings) -> dict[str, list[np.ndarray]]:
  """{'1d': [alphas], '2d': [alphas, betas]} of the settings' grids."""
  def axis(n):
    return np.linspace(-settings.landscape_radius, settings.landscape_radius,
                       n)
  return {"1d": [axis(settings.landscape_points_1d)],
          "2d": [axis(settings.landscape_points_2d)] * 2}


def compute_landscapes(models: Sequence[TrainedModel],
                       settings: StudySettings, output_dir: str
                       ) -> dict[str, dict[str, landscape.LandscapeResult]]:
  """{label: {'1d': result, '2d': result}}; each saved as
  OUT/landscape_<label>_<kind>.json (cached in OUT/landscape_cache)."""
  mesh = parallel.create_mesh()
  out = {}
  for m in models:
    batches = analysis_batches(m.config, settings.landscape_batches)
    out[m.label] = {}
    for kind, axes in landscape_axes(settings).items():
      surface = landscape.random_surface(settings.seed, m.variables, axes)
      result = landscape.compute_landscape(
          m.model, surface, batches, bn_mode=settings.bn_mode,
          key=jax.random.key(settings.seed), mesh=mesh,
          cache_dir=os.path.join(output_dir, LANDSCAPE_CACHE),
          checkpoint_id=f"{os.path.abspath(m.workdir)}@{m.step}",
          data_id=f"train epoch 0, first {len(batches)} batches")
      results_io.save(result, os.path.join(
          output_dir, f"landscape_{file_label(m.label)}_{kind}.json"))
      out[m.label][kind] = result
  return out


def hessian_summary(model: nn.Module, variables: Mapping[str, Any],
                    batches: Sequence[Mapping[str, Any]],
                    settings: StudySettings, mesh: Any = None
                    ) -> summary.HessianSummary:
  """Top eigenvalue and trace of the Hessian of the mean loss over
  `batches` w.r.t. the parameters `settings.hessian_block`, in
  `settings.bn_mode` (see the module docstring)."""
  key_eig, key_trace, key_model = jax.random.split(
      jax.random.key(settings.seed), 3)
  hess = hessian.model_hessian(model, variables, batches,
                               bn_mode=settings.bn_mode, key=key_model,
                               block=settings.hessian_block, mesh=mesh)
  top = spectral.lanczos_top(hess.operator, 1, settings.lanczos_steps,
                             key_eig)
  trace = spectral.hutchinson_trace(hess.operator,
                                    settings.hutchinson_probes, key_trace)
  return summary.HessianSummary(
      float(top.eigenvalues[0]), float(top.residual_norms[0]), trace.mean,
      trace.stderr, trace.num_probes, settings.lanczos_steps,
      hess.num_samples, hess.num_batches, hess.operator.dim, hess.block,
      hess.bn_mode)


def compute_hessians(models: Sequence[TrainedModel], settings: StudySettings,
                     output_dir: str) -> dict[str, summary.HessianSummary]:
  """{label: HessianSummary}, saved together as OUT/hessian.json."""
  mesh = parallel.create_mesh()
  out = {m.label: hessian_summary(
      m.model, m.variables, analysis_batches(m.config,
                                             settings.hessian_batches),
      settings, mesh) for m in models}
  results_io.atomic_write_json(os.path.join(output_dir, "hessian.json"),
              {label: results_io.to_dict(h) for label, h in out.items()})
  return out


def summarize(models: Sequence[TrainedModel],
              landscapes: Mapping[str, Mapping[str, Any]],
              hessians: Mapping[str, summary.HessianSummary],
              settings: StudySettings, output_dir: str
              ) -> list[dict[str, Any]]:
  """The table rows (`summary.summary_row`, one per model), written with
  the settings to OUT/summary.json, as text to OUT/summary.txt, and the
  probe bands to OUT/probe_bands.json."""
  rows = []
  for m in models:
    grids = landscapes.get(m.label, {})
    rows.append(summary.summary_row(m.label, m.top1, m.bands,
                                    grids.get("1d"), grids.get("2d"),
                                    hessians.get(m.label)))
  results_io.atomic_write_json(os.path.join(output_dir, "summary.json"),
              {"settings": dataclasses.asdict(settings), "rows": rows})
  results_io.atomic_write_text(os.path.join(output_dir, "summary.txt"),
                               summary.format_table(rows))
  results_io.atomic_write_json(os.path.join(output_dir, "probe_bands.json"),
              {m.label: results_io.to_dict(m.bands) for m in models
               if m.bands is not None})
  return rows
