"""The training state: one pytree, replicated on every device.

Synopsis:
  state = TrainState.create(params, batch_stats, tx, seed=0, ema=False)
  state = initial_state(model, tx, image_size=224, seed=0)   # model.init
  key = state.base_key()         # fold_in(step) happens inside the step
  state.variables(), state.ema_variables()
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from gcp_jax import backend
from gcp_jax.train.init_schemes import reinitialize

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """step (int32 scalar), params, batch_stats, opt_state, the base RNG
  key stored as raw uint32 key data (checkpointable as a plain array), and
  `ema`: None, or the exponential moving average {'params', 'batch_stats'}
  of the weights (timm's ModelEmaV2: every array of the model, BN running
  statistics included, updated after each step).

  The optimiser itself is not part of the state (it is rebuilt from the
  config), so a checkpoint holds only arrays.
  """
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  rng: jax.Array
  ema: PyTree = None

  @classmethod
  def create(cls, params: PyTree, batch_stats: PyTree,
             tx: optax.GradientTransformation, seed: int,
             ema: bool = False) -> "TrainState":
    """A step-0 state; with `ema` the average starts at the weights."""
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               batch_stats=batch_stats, opt_state=tx.init(params),
               rng=jax.random.key_data(jax.random.key(seed)),
               ema=({"params": params, "batch_stats": batch_stats}
                    if ema else None))

  def base_key(self) -> jax.Array:
    """The typed PRNG key behind `rng`."""
    return jax.random.wrap_key_data(self.rng)

  def variables(self) -> dict[str, PyTree]:
    """{'params', 'batch_stats'} for `model.apply`."""
    return {"params": self.params, "batch_stats": self.batch_stats}

  def ema_variables(self) -> dict[str, PyTree]:
    """The averaged {'params', 'batch_stats'}; requires `ema`."""
    if self.ema is None:
      raise ValueError("This state keeps no EMA (config.ema_decay = 0).")
    return self.ema


def initial_state(model: nn.Module, tx: optax.GradientTransformation,
                  image_size: int, seed: int, ema: bool = False,
                  compiled: bool = True, init_scheme: str = "module"
                  ) -> TrainState:
  """The step-0 state of `model`, initialised with `jax.random.key(seed)`
  on a (1, image_size, image_size, 3) float32 input, its params re-drawn
  as `init_scheme` says (`gcp_jax.train.init_schemes`). `compiled=False`
  traces `model.init` as it is (for `jax.eval_shape`, inside which a
  compiled function with options cannot run)."""
  x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  init = (backend.jit(model.init, static_argnums=2) if compiled
          else model.init)
  key = jax.random.key(seed)
  variables = init(key, x, False)
  params = reinitialize(variables["params"], init_scheme,
                        jax.random.fold_in(key, 1))
  return TrainState.create(params,
                           variables.get("batch_stats", {}), tx, seed,
                           ema=ema)
