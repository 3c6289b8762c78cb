"""The training state: one pytree, replicated on every device.

Synopsis:
  state = TrainState.create(params, batch_stats, tx, seed=0)
  key = state.dropout_key()      # fold_in(step) happens inside the step
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """step (int32 scalar), params, batch_stats, opt_state, and the base RNG
  key stored as raw uint32 key data (checkpointable as a plain array).

  The optimiser itself is not part of the state (it is rebuilt from the
  config), so a checkpoint holds only arrays.
  """
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  rng: jax.Array

  @classmethod
  def create(cls, params: PyTree, batch_stats: PyTree,
             tx: optax.GradientTransformation, seed: int) -> "TrainState":
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               batch_stats=batch_stats, opt_state=tx.init(params),
               rng=jax.random.key_data(jax.random.key(seed)))

  def base_key(self) -> jax.Array:
    """The typed PRNG key behind `rng`."""
    return jax.random.wrap_key_data(self.rng)

  def variables(self) -> dict[str, PyTree]:
    """{'params', 'batch_stats'} for `model.apply`."""
    return {"params": self.params, "batch_stats": self.batch_stats}
