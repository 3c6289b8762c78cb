"""The library's SGD training step for a benchmark, built as `main.py`
builds it (replicated state, data-parallel step over the mesh), without
TensorFlow or the input pipeline."""

from collections.abc import Callable

import jax
import ml_collections
import optax
from flax import linen as nn
from jax.sharding import Mesh

from gcp_jax import parallel
from gcp_jax.train.optim import create_optimizer
from gcp_jax.train.state import TrainState, initial_state
from gcp_jax.train.steps import make_train_step

SGD = {"name": "sgd", "momentum": 0.9, "weight_decay": 1e-4}


def sgd_train_step(model: nn.Module, mesh: Mesh, image_size: int,
                   schedule: optax.Schedule, seed: int = 0
                   ) -> tuple[Callable, TrainState, int]:
  """SGD (momentum 0.9, weight decay 1e-4 coupled into the gradient) on
  `schedule` for `model` (built with `bn_axis_name=parallel.DATA_AXIS`).

  Returns:
    (the jitted step `make_train_step` builds, the replicated step-0
    state, the number of trainable parameters).
  """
  tx = create_optimizer(ml_collections.ConfigDict(SGD), schedule)
  state = initial_state(model, tx, image_size, seed)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  return (make_train_step(model, tx, schedule, mesh),
          parallel.replicate(mesh, state), num_params)
