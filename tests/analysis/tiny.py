"""Small models and data shared by the analysis tests."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from gcp_jax import parallel
from gcp_jax.models import create_model


class MLP(nn.Module):
  """6 -> 10 (tanh) -> 4: 114 parameters, dtype follows the inputs."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train
    x = jnp.tanh(nn.Dense(10, name="hidden")(x))
    return nn.Dense(4, name="head")(x)


@functools.lru_cache(maxsize=None)
def _model_and_init(name: str, sync_bn: bool):
  model = create_model(
      name, 10, bn_axis_name=parallel.DATA_AXIS if sync_bn else None)
  return model, jax.jit(lambda k: model.init(k, jnp.zeros((1, 8, 8, 3)),
                                             False))


def tiny_resnet(name: str, seed: int = 0, sync_bn: bool = True):
  """(model, variables) of a `resnet_tiny_*` model for 8 x 8 RGB inputs,
  with running statistics moved away from (0, 1) so 'running' mode is not
  the identity. The model object (and its compiled init) is shared by all
  calls with the same name, so compiled analyses can be reused."""
  model, init = _model_and_init(name, sync_bn)
  variables = init(jax.random.key(seed))
  rng = np.random.default_rng(seed)

  def move(path, x):
    name = jax.tree_util.keystr(path)
    if "var" in name:
      return jnp.asarray(rng.uniform(0.5, 2.0, x.shape), x.dtype)
    return jnp.asarray(rng.normal(0.0, 0.3, x.shape), x.dtype)
  variables = dict(variables)
  variables["batch_stats"] = jax.tree_util.tree_map_with_path(
      move, variables["batch_stats"])
  return model, variables


def image_batches(num_batches: int, batch_size: int, seed: int = 0
                  ) -> list[dict[str, np.ndarray]]:
  """Random 8 x 8 x 3 float32 images with labels in 0..9."""
  rng = np.random.default_rng(seed)
  return [{"image": rng.standard_normal((batch_size, 8, 8, 3)
                                        ).astype(np.float32),
           "label": rng.integers(0, 10, batch_size).astype(np.int32)}
          for _ in range(num_batches)]


class Linear(nn.Module):
  """Flatten -> Dense(num_classes): a loss that is easy to write out."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train
    return nn.Dense(self.num_classes, name="fc")(x.reshape(x.shape[0], -1))


_APPLY = {}


def jitted_apply(model: nn.Module):
  """`model.apply(variables, x, False)` compiled once per model object
  (eager application is slow)."""
  if id(model) not in _APPLY:
    _APPLY[id(model)] = (model, jax.jit(
        lambda variables, x: model.apply(variables, x, False)))
  return _APPLY[id(model)][1]
