"""Evaluation of a training state over the evaluation data: the compiled
eval steps a config asks for and one pass over the eval batches.

Each eval step returns the masked sums of a batch (`gcp_jax.train.steps.
make_eval_step`); a pass adds them over the batches and divides by the
number of real examples, so padded batches change nothing.

Synopsis:
  eval_steps = make_eval_steps(config, model, mesh)   # {'': ..., 'ema_': ...}
  metrics = evaluate_batches(eval_steps, state, datasets.eval_batches(), mesh)
  metrics["top1"], metrics["ema_top5"], metrics["count"]
"""

from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh

from gcp_jax import parallel
from gcp_jax.train.state import TrainState
from gcp_jax.train.steps import make_eval_step

EvalStep = Callable[[TrainState, dict[str, jax.Array]],
                    dict[str, jax.Array]]


def make_eval_steps(config: ml_collections.ConfigDict, model: nn.Module,
                    mesh: Mesh) -> dict[str, EvalStep]:
  """{'': weights, 'ema_': weight average (if config.ema_decay > 0)}."""
  steps = {"": make_eval_step(model, mesh)}
  if config.ema_decay > 0:
    steps["ema_"] = make_eval_step(model, mesh, use_ema=True)
  return steps


def evaluate_batches(eval_steps: dict[str, EvalStep], state: TrainState,
                     batches: Iterable[dict[str, np.ndarray]], mesh: Mesh
                     ) -> dict[str, float]:
  """Loss, top-1, top-5 and count of every eval step, keys prefixed with
  the step's name ('' for the weights, 'ema_' for their average); the
  batches (this host's {'image', 'label', 'mask'}) are read once."""
  sums = {}
  for batch in batches:
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
