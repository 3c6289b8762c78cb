"""A trained run, from its workdir's latest checkpoint (or, for `evaluate`,
the `config.init_from` file): evaluate it, load it, export it to PyTorch.
Nothing here trains or initialises a weight; a workdir without a checkpoint
is an error (`MissingCheckpointError`).

Synopsis:
  metrics = evaluate(config, workdir)        # latest checkpoint, no training
  restored = restore_for_eval(config, workdir)   # state, data, eval steps
  model, state = load_checkpoint(config, workdir)   # no data read
  path = export_pytorch(config, workdir)     # WORKDIR/pytorch_state_dict.pth
"""

import os
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn
from jax.sharding import Mesh

from gcp_jax import parallel
from gcp_jax.convert import save_pytorch_checkpoint
from gcp_jax.errors import ConfigError, GcpJaxError
from gcp_jax.train import checkpoint as ckpt_lib
from gcp_jax.train import loop
from gcp_jax.train.evaluation import (EvalStep, evaluate_batches,
                                      make_eval_steps)
from gcp_jax.train.optim import create_optimizer
from gcp_jax.train.pretrained import (check_padding, eval_variables,
                                      read_init_from)
from gcp_jax.train.schedules import create_lr_schedule
from gcp_jax.train.state import TrainState
from gcp_jax.train.steps import make_eval_step

if TYPE_CHECKING:   # gcp_jax.data.pipeline imports TensorFlow
  from gcp_jax.data.pipeline import Datasets

PYTORCH_EXPORT = "pytorch_state_dict.pth"


class MissingCheckpointError(GcpJaxError, FileNotFoundError):
  """`--mode=eval` on a workdir without a checkpoint."""


def _require_checkpoint(workdir: str) -> None:
  """Raises MissingCheckpointError unless `workdir` has a checkpoint."""
  if not ckpt_lib.has_checkpoint(workdir):
    ckpt_dir = os.path.join(workdir, "checkpoints")
    raise MissingCheckpointError(
        f"No checkpoint in {ckpt_dir}; train first (--mode=train) or point "
        f"--workdir at a trained run.")


class Restored(NamedTuple):
  """A checkpoint ready to evaluate (`restore_for_eval`)."""
  mesh: Mesh
  datasets: "Datasets"
  model: nn.Module
  state: TrainState                 # replicated on the mesh
  eval_steps: dict[str, EvalStep]
  origin: dict[str, Any]            # {'init_from': path} or {'step': n}


def restore_for_eval(config: ml_collections.ConfigDict, workdir: str
                     ) -> Restored:
  """The latest checkpoint in `workdir`, or with `config.init_from` that
  file's weights, with the data, the mesh and the eval steps; never
  initialises a weight (without a checkpoint this is an error)."""
  if config.init_from:
    mesh = loop.checked_mesh(config)
    checkpoint_file = read_init_from(config)
    datasets, model = loop.data_and_model(config)
    check_padding(checkpoint_file, model)
    variables = eval_variables(checkpoint_file, config, model,
                               config.data.image_size)
    state = parallel.replicate(mesh, TrainState(
        step=jnp.zeros((), jnp.int32), params=variables["params"],
        batch_stats=variables.get("batch_stats", {}), opt_state=(),
        rng=jax.random.key_data(jax.random.key(config.seed))))
    return Restored(mesh, datasets, model, state,
                    {"": make_eval_step(model, mesh)},
                    {"init_from": config.init_from})
  _require_checkpoint(workdir)
  run = loop.setup(config, workdir)
  run.checkpoints.close()
  return Restored(run.mesh, run.datasets, run.model, run.state,
                  make_eval_steps(config, run.model, run.mesh),
                  {"step": int(jax.device_get(run.state.step))})


def evaluate(config: ml_collections.ConfigDict, workdir: str
             ) -> dict[str, float]:
  """Evaluates the latest checkpoint in `workdir`, or with
  `config.init_from` that file's weights (never initialises a weight:
  without a checkpoint this is an error)."""
  restored = restore_for_eval(config, workdir)
  metrics = evaluate_batches(restored.eval_steps, restored.state,
                             restored.datasets.eval_batches(),
                             restored.mesh)
  metrics.update(restored.origin)
  return metrics


def load_checkpoint(config: ml_collections.ConfigDict, workdir: str
                    ) -> tuple[nn.Module, TrainState]:
  """The model and the state of the latest checkpoint in `workdir`
  (replicated on the mesh), for analysing or exporting a trained run:
  nothing is trained or initialised, and a workdir without a checkpoint is
  an error. The data is not read: the number of classes and the steps per
  epoch come from the checkpoint's metadata."""
  _require_checkpoint(workdir)
  mesh = loop.checked_mesh(config)
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
    model = loop.build_model(config, num_classes)
    # Only the optimiser state's structure matters here, not its schedule.
    tx = create_optimizer(config.optimizer, create_lr_schedule(
        config.schedule, config.learning_rate,
        meta.get("steps_per_epoch", 1), config.num_epochs))
    state, _ = checkpoints.restore_latest(
        loop.abstract_state(config, model, tx, mesh))
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
