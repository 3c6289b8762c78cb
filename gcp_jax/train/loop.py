"""The training loop: `train_and_evaluate(config, workdir)`, and the set-up
of a run (`setup`) that `gcp_jax.train.restore` shares.

Initialisation order: the workdir's latest checkpoint (automatic resume),
else a fresh initialisation from `config.seed`. The data position is derived
from the restored step (epoch = step // steps_per_epoch, then the offset in
the epoch), and the data order and augmentation are deterministic functions
of (seed, epoch, example), so a resumed run sees the same batches as an
uninterrupted one.

Synopsis:
  result = train_and_evaluate(config, workdir)
  result.eval_metrics["top1"], result.history[-1]["loss"]
  run = setup(config, workdir)     # mesh, data, model, optimiser, state
"""

import dataclasses
import functools
import os
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from gcp_jax import models, parallel
from gcp_jax.data import mixing
from gcp_jax.data.config import DataSettings
from gcp_jax.errors import ConfigError, GcpJaxError
from gcp_jax.model_config import ModelConfig, from_mapping
from gcp_jax.models import Runtime
from gcp_jax.train import checkpoint as ckpt_lib
from gcp_jax.train.config_check import check_training_config
from gcp_jax.train.evaluation import evaluate_batches, make_eval_steps
from gcp_jax.train.optim import create_optimizer
from gcp_jax.train.pretrained import (check_padding, pretrained_variables,
                                      read_init_from)
from gcp_jax.train.probe_hook import ProbeHook
from gcp_jax.train.reporting import Reporter
from gcp_jax.train.schedules import create_lr_schedule
from gcp_jax.train.state import TrainState, initial_state
from gcp_jax.train.steps import make_train_step

if TYPE_CHECKING:   # gcp_jax.data.pipeline imports TensorFlow
  from gcp_jax.data.pipeline import Datasets


class NonFiniteLossError(GcpJaxError, FloatingPointError):
  """The training loss became NaN or Inf."""


@dataclasses.dataclass
class TrainResult:
  """What `train_and_evaluate` returns (for tests and notebooks)."""
  state: TrainState
  history: list[dict[str, float]]        # one entry per logging interval
  eval_metrics: dict[str, float]         # of the final evaluation
  eval_history: list[dict[str, float]]


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
  """`config.model` as a `ModelConfig` (an unknown key is an error)."""
  try:
    return from_mapping(config.model.to_dict())
  except ValueError as e:
    raise ConfigError(f"config.model: {e}") from None


def model_outputs(config: ml_collections.ConfigDict, data_classes: int
                  ) -> int:
  """Classifier outputs: the data's classes plus `config.extra_outputs`
  (outputs no label uses, as the MindSpore recipe's 1001-way head)."""
  return data_classes + config.extra_outputs


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  """The configured model, with BN/DropCov reductions bound to the mesh."""
  runtime = Runtime(
      dtype=jnp.bfloat16 if config.half_precision else jnp.float32,
      bn_axis_name=parallel.DATA_AXIS if config.sync_bn else None,
      rate_axis_name=(parallel.DATA_AXIS if config.dropcov_global_rate
                      else None))
  try:
    return models.build_model(model_config(config), num_classes, runtime)
  except ValueError as e:
    raise ConfigError(f"config.model: {e}") from None


def abstract_state(config: ml_collections.ConfigDict, model: nn.Module,
                   tx: optax.GradientTransformation, mesh: Mesh
                   ) -> TrainState:
  """The replicated state's shapes, dtypes and shardings, to restore into
  (nothing is computed or initialised)."""
  return parallel.abstract_replicated(mesh, jax.eval_shape(
      lambda: initial_state(model, tx, config.data.image_size, config.seed,
                            ema=config.ema_decay > 0, compiled=False,
                            init_scheme=config.init_scheme)))


def _total_steps(config, steps_per_epoch: int) -> int:
  if config.num_train_steps > 0:
    return config.num_train_steps
  return config.num_epochs * steps_per_epoch


def _save_config(config, workdir: str) -> None:
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, "config.json")
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(path + ".tmp", path)


def _mix_fn(config, num_classes: int):
  """Mixup / CutMix of the data config bound to its settings, or None."""
  settings = DataSettings.from_config(config.data)
  if not settings.mixing:
    return None
  return functools.partial(
      mixing.mix_batch, num_classes=num_classes,
      mixup_alpha=settings.mixup_alpha, cutmix_alpha=settings.cutmix_alpha,
      prob=settings.mix_prob, switch_prob=settings.mix_switch_prob,
      label_smoothing=config.label_smoothing)


def checked_mesh(config: ml_collections.ConfigDict) -> Mesh:
  """The device mesh, after the config checks that need no data.

  The set-up goes cheapest first: these checks, then the workdir and the
  `init_from` file, then the data (`data_and_model`), so that a config
  error or an unreadable file is reported at once, before TensorFlow (slow
  to import, for tf.data) and the data set load (measurements:
  benchmarks/RESULTS.md, "Start-up: errors before TensorFlow").
  """
  check_training_config(config)
  mesh = parallel.create_mesh()
  parallel.check_batch_size(config.data.global_batch_size, mesh, "training")
  parallel.check_batch_size(config.data.eval_batch_size, mesh, "evaluation")
  return mesh


def data_and_model(config: ml_collections.ConfigDict
                   ) -> tuple["Datasets", nn.Module]:
  """The data sets and the model (its classes from the data if
  `config.num_classes` is 0)."""
  from gcp_jax.data.pipeline import create_datasets  # imports TensorFlow
  datasets = create_datasets(config.data,
                             process_index=jax.process_index(),
                             process_count=jax.process_count())
  num_classes = config.num_classes or datasets.info.num_classes
  if num_classes != datasets.info.num_classes:
    raise ConfigError(
        f"config.num_classes={config.num_classes} but the data set has "
        f"{datasets.info.num_classes} classes; set config.num_classes=0 to "
        f"take it from the data.")
  return datasets, build_model(config, model_outputs(config, num_classes))


class RunSetup(NamedTuple):
  """What a run is built from (`setup`); `meta` goes into every checkpoint."""
  mesh: Mesh
  datasets: "Datasets"
  model: nn.Module
  schedule: optax.Schedule
  tx: optax.GradientTransformation
  state: TrainState                  # replicated on the mesh
  checkpoints: ckpt_lib.Checkpoints
  meta: dict[str, Any]


def setup(config: ml_collections.ConfigDict, workdir: str) -> RunSetup:
  """Mesh, data, model, optimiser, state: restored if the workdir has a
  checkpoint, else imported from `config.init_from`, else initialised."""
  mesh = checked_mesh(config)
  resume = ckpt_lib.has_checkpoint(workdir)
  checkpoint_file = (read_init_from(config)
                     if config.init_from and not resume else None)
  datasets, model = data_and_model(config)
  if checkpoint_file is not None:
    check_padding(checkpoint_file, model)
  steps_per_epoch = datasets.steps_per_epoch()
  schedule = create_lr_schedule(config.schedule, config.learning_rate,
                                steps_per_epoch, config.num_epochs)
  tx = create_optimizer(config.optimizer, schedule)
  checkpoints = ckpt_lib.Checkpoints(workdir, config.keep_checkpoints)
  meta = {"model": model_config(config).as_dict(),
          "steps_per_epoch": steps_per_epoch,
          "num_classes": datasets.info.num_classes}
  if checkpoint_file is not None:
    variables, _ = pretrained_variables(checkpoint_file, config, model,
                                        config.data.image_size)
    state = parallel.replicate(mesh, TrainState.create(
        variables["params"], variables.get("batch_stats", {}), tx,
        config.seed, ema=config.ema_decay > 0))
  elif not resume:
    state = parallel.replicate(mesh, initial_state(
        model, tx, config.data.image_size, config.seed,
        ema=config.ema_decay > 0, init_scheme=config.init_scheme))
  else:   # restore into the state's shapes; never initialise the weights
    state, saved = checkpoints.restore_latest(
        abstract_state(config, model, tx, mesh))
    if saved.get("steps_per_epoch") != steps_per_epoch:
      raise ConfigError(
          f"The checkpoint in {workdir} was trained with "
          f"{saved.get('steps_per_epoch')} steps per epoch, this config gives "
          f"{steps_per_epoch} (different batch size or data set); resuming "
          f"would change the schedule. Use the original config or a new "
          f"--workdir.")
  return RunSetup(mesh, datasets, model, schedule, tx, state, checkpoints,
                  meta)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> TrainResult:
  """Trains `config.model` on `config.data`, evaluating and checkpointing
  every `eval_every_epochs` / `checkpoint_every_epochs` and at the end.

  Returns:
    A `TrainResult`: final state, logged train metrics, final eval metrics.
  """
  os.makedirs(workdir, exist_ok=True)
  (mesh, datasets, model, schedule, tx, state, checkpoints,
   meta) = setup(config, workdir)
  steps_per_epoch = datasets.steps_per_epoch()
  probe = ProbeHook(config.gradient_probe, model, mesh, workdir,
                    steps_per_epoch, int(jax.device_get(state.step)))
  _save_config(config, workdir)
  total = _total_steps(config, steps_per_epoch)
  train_step = make_train_step(
      model, tx, schedule, mesh, label_smoothing=config.label_smoothing,
      ema_decay=config.ema_decay, mix=_mix_fn(config, model_outputs(
          config, datasets.info.num_classes)),
      smoothing_style=config.label_smoothing_style)
  eval_steps = make_eval_steps(config, model, mesh)
  reporter = Reporter(workdir, total, enabled=jax.process_index() == 0)
  step = int(jax.device_get(state.step))
  if step:
    reporter.message(f"Resuming from step {step} (epoch "
                     f"{step // steps_per_epoch}) in {workdir}.")
  history, eval_history, eval_metrics = [], [], {}
  window, pending = [], None
  window_start = time.monotonic()

  def flush():
    """Fetches and checks the metrics of the last dispatched step."""
    nonlocal pending
    if pending is None:
      return
    done_step, metrics = pending
    metrics = jax.device_get(metrics)
    loss = float(metrics["loss_sum"]) / float(metrics["count"])
    if not np.isfinite(loss):
      raise NonFiniteLossError(
          f"Training loss is {loss} at step {done_step} (epoch "
          f"{(done_step - 1) // steps_per_epoch}). Lower the learning rate "
          f"or check the data; checkpoints up to the last save are intact.")
    window.append(metrics)
    pending = None

  while step < total:
    epoch = step // steps_per_epoch
    for batch in datasets.train_batches(epoch, step % steps_per_epoch):
      batch = parallel.host_batch_to_global(mesh, batch)
      if probe.wants(step):      # pre-update weights, the step's own batch
        probe(state, batch, step)
      state, metrics = train_step(state, batch)
      step += 1
      flush()              # the previous step's metrics: no pipeline stall
      pending = (step, metrics)
      if step % config.log_every_steps == 0 or step == total:
        flush()
        summary = _summarize_train(window, time.monotonic() - window_start)
        summary["step"] = step
        history.append(summary)
        reporter.write("train", step, {k: v for k, v in summary.items()
                                       if k != "step"})
        reporter.progress(step, {k: summary[k] for k in
                                 ("loss", "top1", "learning_rate")},
                          summary["images_per_second"])
        window, window_start = [], time.monotonic()
      if step == total:
        break
    flush()
    epochs, epoch_done = divmod(step, steps_per_epoch)
    epoch_done = epoch_done == 0
    last = step >= total
    top1 = None
    if last or (epoch_done and epochs % config.eval_every_epochs == 0):
      eval_metrics = evaluate_batches(eval_steps, state,
                                      datasets.eval_batches(), mesh)
      eval_metrics["step"] = step
      eval_history.append(eval_metrics)
      top1 = eval_metrics[config.best_metric]
      reporter.write("eval", step, {k: v for k, v in eval_metrics.items()
                                    if k != "step"})
      ema = (f"; EMA top-1 {eval_metrics['ema_top1']:.4f}"
             if "ema_top1" in eval_metrics else "")
      reporter.message(
          f"eval at step {step}: top-1 {eval_metrics['top1']:.4f}, top-5 "
          f"{eval_metrics['top5']:.4f}, loss {eval_metrics['loss']:.4f} "
          f"({int(eval_metrics['count'])} images){ema}")
    if last or (epoch_done and epochs % config.checkpoint_every_epochs == 0):
      checkpoints.save(step, state, {**meta, "eval": eval_metrics or None},
                       eval_top1=top1)
  checkpoints.close()
  reporter.close()
  if jax.process_count() > 1:   # leave together: no process exits mid-save
    multihost_utils.sync_global_devices("gcp_jax.train_and_evaluate")
  return TrainResult(state, history, eval_metrics, eval_history)


def _summarize_train(window: list[dict[str, Any]], seconds: float
                     ) -> dict[str, float]:
  """Means over a logging window of fetched step metrics."""
  count = sum(float(m["count"]) for m in window)
  out = {"loss": sum(float(m["loss_sum"]) for m in window) / count,
         "top1": sum(float(m["correct_sum"]) for m in window) / count,
         "learning_rate": float(window[-1]["learning_rate"]),
         "grad_norm": float(np.mean([m["grad_norm"] for m in window])),
         "images_per_second": count / max(seconds, 1e-9)}
  if "dropcov_rate" in window[-1]:
    out["dropcov_rate"] = float(np.mean([m["dropcov_rate"] for m in window]))
  return out
