"""The training loop: `train_and_evaluate(config, workdir)` and `evaluate`.

Initialisation order: the workdir's latest checkpoint (automatic resume),
else a fresh initialisation from `config.seed`. The data position is derived
from the restored step (epoch = step // steps_per_epoch, then the offset in
the epoch), and the data order and augmentation are deterministic functions
of (seed, epoch, example), so a resumed run sees the same batches as an
uninterrupted one.

Synopsis:
  result = train_and_evaluate(config, workdir)
  result.eval_metrics["top1"], result.history[-1]["loss"]
  metrics = evaluate(config, workdir)        # latest checkpoint, no training
"""

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from gcp_jax import backend, parallel
from gcp_jax.data import mixing
from gcp_jax.data.config import DataSettings
from gcp_jax.convert import save_pytorch_checkpoint
from gcp_jax.errors import ConfigError, GcpJaxError
from gcp_jax.models import create_model
from gcp_jax.train import checkpoint as ckpt_lib
from gcp_jax.train.config_check import check_training_config
from gcp_jax.train.optim import create_optimizer
from gcp_jax.train.pretrained import (check_padding, eval_variables,
                                      pretrained_variables, read_init_from)
from gcp_jax.train.probe_hook import ProbeHook
from gcp_jax.train.reporting import Reporter
from gcp_jax.train.schedules import create_lr_schedule
from gcp_jax.train.state import TrainState
from gcp_jax.train.steps import make_eval_step, make_train_step


PYTORCH_EXPORT = "pytorch_state_dict.pth"


class NonFiniteLossError(GcpJaxError, FloatingPointError):
  """The training loss became NaN or Inf."""


class MissingCheckpointError(GcpJaxError, FileNotFoundError):
  """`--mode=eval` on a workdir without a checkpoint."""


@dataclasses.dataclass
class TrainResult:
  """What `train_and_evaluate` returns (for tests and notebooks)."""
  state: TrainState
  history: list[dict[str, float]]        # one entry per logging interval
  eval_metrics: dict[str, float]         # of the final evaluation
  eval_history: list[dict[str, float]]


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  """The configured model, with BN/DropCov reductions bound to the mesh."""
  overrides = config.model_overrides.to_dict()   # nested ConfigDicts too
  if config.half_precision:
    overrides["dtype"] = jnp.bfloat16
  overrides["bn_axis_name"] = parallel.DATA_AXIS if config.sync_bn else None
  if config.dropcov_global_rate:
    overrides["rate_axis_name"] = parallel.DATA_AXIS
  return create_model(config.model, num_classes, **overrides)


def _initial_state(config, model, tx, image_size: int,
                   compiled: bool = True) -> TrainState:
  """The step-0 state; `compiled=False` traces `model.init` as it is (for
  `jax.eval_shape`, inside which a compiled function with options cannot
  run)."""
  x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  init = (backend.jit(model.init, static_argnums=2) if compiled
          else model.init)
  variables = init(jax.random.key(config.seed), x, False)
  return TrainState.create(variables["params"],
                           variables.get("batch_stats", {}), tx, config.seed,
                           ema=config.ema_decay > 0)


def _abstract_state(config, model, tx, mesh) -> TrainState:
  """The replicated state's shapes, dtypes and shardings, to restore into
  (nothing is computed or initialised)."""
  return parallel.abstract_replicated(mesh, jax.eval_shape(
      lambda: _initial_state(config, model, tx, config.data.image_size,
                             compiled=False)))


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


def _evaluate(eval_steps, state, datasets, mesh) -> dict[str, float]:
  """Loss, top-1, top-5 and count of every eval step, keys prefixed with
  the step's name ('' for the weights, 'ema_' for their average); the
  batches are read once."""
  sums = {}
  for batch in datasets.eval_batches():
    batch = parallel.host_batch_to_global(mesh, batch)
    for prefix, eval_step in eval_steps.items():
      out = eval_step(state, batch)
      sums[prefix] = (out if prefix not in sums
                      else jax.tree.map(jnp.add, sums[prefix], out))
  metrics = {}
  for prefix, total in jax.device_get(sums).items():
    count = float(total["count"])
    metrics.update({prefix + "loss": float(total["loss_sum"]) / count,
                    prefix + "top1": float(total["top1_sum"]) / count,
                    prefix + "top5": float(total["top5_sum"]) / count})
  metrics["count"] = count
  return metrics


def _make_eval_steps(config, model, mesh):
  """{'': weights, 'ema_': weight average (if config.ema_decay > 0)}."""
  steps = {"": make_eval_step(model, mesh)}
  if config.ema_decay > 0:
    steps["ema_"] = make_eval_step(model, mesh, use_ema=True)
  return steps


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


def _checked_mesh(config):
  """The device mesh, after the config checks that need no data.

  The set-up goes cheapest first: these checks, then the workdir and the
  `init_from` file, then the data (`_data_and_model`), so that a config
  error or an unreadable file is reported in seconds, before TensorFlow
  (~7 s of CPU to import, for tf.data) and the data set load.
  """
  check_training_config(config)
  mesh = parallel.create_mesh()
  parallel.check_batch_size(config.data.global_batch_size, mesh, "training")
  parallel.check_batch_size(config.data.eval_batch_size, mesh, "evaluation")
  return mesh


def _data_and_model(config):
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
  return datasets, build_model(config, num_classes)


def _setup(config, workdir):
  """Mesh, data, model, optimiser, state: restored if the workdir has a
  checkpoint, else imported from `config.init_from`, else initialised."""
  mesh = _checked_mesh(config)
  resume = ckpt_lib.has_checkpoint(workdir)
  checkpoint_file = (read_init_from(config)
                     if config.init_from and not resume else None)
  datasets, model = _data_and_model(config)
  if checkpoint_file is not None:
    check_padding(checkpoint_file, model)
  steps_per_epoch = datasets.steps_per_epoch()
  schedule = create_lr_schedule(config.schedule, config.learning_rate,
                                steps_per_epoch, config.num_epochs)
  tx = create_optimizer(config.optimizer, schedule)
  checkpoints = ckpt_lib.Checkpoints(workdir, config.keep_checkpoints)
  meta = {"model": config.model, "steps_per_epoch": steps_per_epoch,
          "num_classes": datasets.info.num_classes}
  if checkpoint_file is not None:
    variables, _ = pretrained_variables(checkpoint_file, config, model,
                                        config.data.image_size)
    state = parallel.replicate(mesh, TrainState.create(
        variables["params"], variables.get("batch_stats", {}), tx,
        config.seed, ema=config.ema_decay > 0))
  elif not resume:
    state = parallel.replicate(mesh, _initial_state(config, model, tx,
                                                    config.data.image_size))
  else:   # restore into the state's shapes; never initialise the weights
    state, saved = checkpoints.restore_latest(
        _abstract_state(config, model, tx, mesh))
    if saved.get("steps_per_epoch") != steps_per_epoch:
      raise ConfigError(
          f"The checkpoint in {workdir} was trained with "
          f"{saved.get('steps_per_epoch')} steps per epoch, this config gives "
          f"{steps_per_epoch} (different batch size or data set); resuming "
          f"would change the schedule. Use the original config or a new "
          f"--workdir.")
  return mesh, datasets, model, schedule, tx, state, checkpoints, meta


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> TrainResult:
  """Trains `config.model` on `config.data`, evaluating and checkpointing
  every `eval_every_epochs` / `checkpoint_every_epochs` and at the end.

  Returns:
    A `TrainResult`: final state, logged train metrics, final eval metrics.
  """
  os.makedirs(workdir, exist_ok=True)
  (mesh, datasets, model, schedule, tx, state, checkpoints,
   meta) = _setup(config, workdir)
  steps_per_epoch = datasets.steps_per_epoch()
  probe = ProbeHook(config.gradient_probe, model, mesh, workdir,
                    steps_per_epoch, int(jax.device_get(state.step)))
  _save_config(config, workdir)
  total = _total_steps(config, steps_per_epoch)
  train_step = make_train_step(
      model, tx, schedule, mesh, config.label_smoothing, config.ema_decay,
      _mix_fn(config, datasets.info.num_classes))
  eval_steps = _make_eval_steps(config, model, mesh)
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
      eval_metrics = _evaluate(eval_steps, state, datasets, mesh)
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


def _require_checkpoint(workdir: str) -> None:
  if not ckpt_lib.has_checkpoint(workdir):
    ckpt_dir = os.path.join(workdir, "checkpoints")
    raise MissingCheckpointError(
        f"No checkpoint in {ckpt_dir}; train first (--mode=train) or point "
        f"--workdir at a trained run.")


def evaluate(config: ml_collections.ConfigDict, workdir: str
             ) -> dict[str, float]:
  """Evaluates the latest checkpoint in `workdir`, or with
  `config.init_from` that file's weights (never initialises a weight:
  without a checkpoint this is an error)."""
  if config.init_from:
    mesh = _checked_mesh(config)
    checkpoint_file = read_init_from(config)
    datasets, model = _data_and_model(config)
    check_padding(checkpoint_file, model)
    variables = eval_variables(checkpoint_file, config, model,
                               config.data.image_size)
    state = parallel.replicate(mesh, TrainState(
        step=jnp.zeros((), jnp.int32), params=variables["params"],
        batch_stats=variables.get("batch_stats", {}), opt_state=(),
        rng=jax.random.key_data(jax.random.key(config.seed))))
    metrics = _evaluate({"": make_eval_step(model, mesh)}, state, datasets,
                        mesh)
    metrics["init_from"] = config.init_from
    return metrics
  _require_checkpoint(workdir)
  mesh, datasets, model, _, _, state, checkpoints, _ = _setup(config, workdir)
  checkpoints.close()
  metrics = _evaluate(_make_eval_steps(config, model, mesh), state,
                      datasets, mesh)
  metrics["step"] = int(jax.device_get(state.step))
  return metrics


def load_checkpoint(config: ml_collections.ConfigDict, workdir: str
                    ) -> tuple[Any, TrainState]:
  """The model and the state of the latest checkpoint in `workdir`
  (replicated on the mesh), for analysing or exporting a trained run:
  nothing is trained or initialised, and a workdir without a checkpoint is
  an error. The data is not read: the number of classes and the steps per
  epoch come from the checkpoint's metadata."""
  _require_checkpoint(workdir)
  mesh = _checked_mesh(config)
  checkpoints = ckpt_lib.Checkpoints(workdir, config.keep_checkpoints)
  try:
    meta = checkpoints.latest_meta()
    num_classes = config.num_classes or meta.get("num_classes")
    if not num_classes or num_classes != meta.get("num_classes", num_classes):
      raise ConfigError(
          f"config.num_classes={config.num_classes} but the checkpoint in "
          f"{workdir} has {meta.get('num_classes', 'no recorded number of')} "
          f"classes; set config.num_classes to the number it was trained "
          f"with.")
    model = build_model(config, num_classes)
    # Only the optimiser state's structure matters here, not its schedule.
    tx = create_optimizer(config.optimizer, create_lr_schedule(
        config.schedule, config.learning_rate,
        meta.get("steps_per_epoch", 1), config.num_epochs))
    state, _ = checkpoints.restore_latest(
        _abstract_state(config, model, tx, mesh))
  finally:
    checkpoints.close()
  return model, state


def export_pytorch(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes the workdir's latest checkpoint as a PyTorch state_dict in the
  fast-MPN-COV naming (`gcp_jax.convert.save_pytorch_checkpoint`; ResNet
  models, needs torch) to WORKDIR/pytorch_state_dict.pth.

  Returns:
    The file written.
  """
  _, state = load_checkpoint(config, workdir)
  path = os.path.join(workdir, PYTORCH_EXPORT)
  if jax.process_index() == 0:
    save_pytorch_checkpoint(jax.device_get(state.variables()), path)
  return path
