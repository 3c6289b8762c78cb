"""Filter-normalised loss landscapes: 1-D and 2-D grids, interpolation.

A `Surface` is a grid of points theta(c) = theta_0 + sum_k c_k d_k with one
or two directions d_k (`directions.py`) and coordinates c_k on the axes:

  random_surface(seed, variables, [alphas])            1-D, random direction
  random_surface(seed, variables, [alphas, betas])     2-D, two directions
  interpolation_surface(variables_a, variables_b, alphas)
      theta_a + alpha (theta_b - theta_a): alpha = 0 is a, alpha = 1 is b

`compute_landscape` evaluates the classification loss and top-1 accuracy
(`evaluation.py`) at every grid point over the given batches, in an explicit
BN mode, sharded over the mesh. With `cache_dir` the result is stored under
a key hashing everything that determines it (`landscape_cache.py`) and
rewritten after every point, so a later call returns it without evaluating
and an interrupted call resumes where it stopped.

BN. In 'running' mode the running statistics are those of the point
theta(c) (moved only if the directions include them: `include_batch_stats`,
or interpolation, which includes them by default, so both endpoints are the
two models exactly). In 'batch' mode they are unused: every batch is
normalised with its own statistics (Li et al.'s code uses running
statistics, `net.eval()`).

Synopsis:
  surface = random_surface(0, variables, [np.linspace(-1, 1, 21)] * 2)
  result = compute_landscape(model, surface, batches, bn_mode="running",
                             cache_dir="landscapes", checkpoint_id="ckpt/500")
  result.loss          # (21, 21); result.accuracy; result.axes
"""

import dataclasses
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh

from gcp_jax.analysis import (directions, evaluation, forward,
                              landscape_cache, results_io)


@dataclasses.dataclass(frozen=True)
class Surface:
  """Grid theta_0 + sum_k c_k d_k, c in the product of `axes`.

  Attributes:
    base: theta_0, {'params', 'batch_stats'}.
    directions: one direction per axis (structure of `base`).
    axes: coordinates per direction, each (n_k,).
    recipe: JSON-able description of how the directions were made (part of
      the cache key and stored with the result).
  """
  base: forward.Variables
  directions: tuple[Any, ...]
  axes: tuple[np.ndarray, ...]
  recipe: dict[str, Any]


def random_surface(seed: int, variables: forward.Variables,
                   axes: Sequence[Any], *, one_d: str = "zero",
                   include_batch_stats: bool = False) -> Surface:
  """A 1-D (one axis) or 2-D (two axes) grid along filter-normalised random
  directions drawn from `jax.random.key(seed)` (direction k from the k-th
  split of that key)."""
  if len(axes) not in (1, 2):
    raise ValueError(f"A surface has 1 or 2 axes, got {len(axes)}.")
  keys = jax.random.split(jax.random.key(seed), len(axes))
  dirs = tuple(directions.random_direction(
      k, variables, one_d=one_d, include_batch_stats=include_batch_stats)
      for k in keys)
  recipe = {"kind": "random", "seed": int(seed), "one_d": one_d,
            "include_batch_stats": bool(include_batch_stats)}
  return Surface(variables, dirs, tuple(np.asarray(a, np.float64)
                                        for a in axes), recipe)


def interpolation_surface(variables_a: forward.Variables,
                          variables_b: forward.Variables, alphas: Any, *,
                          include_batch_stats: bool = True) -> Surface:
  """theta_a + alpha (theta_b - theta_a) for alpha in `alphas`."""
  d = directions.difference(variables_a, variables_b,
                            include_batch_stats=include_batch_stats)
  recipe = {"kind": "interpolation",
            "include_batch_stats": bool(include_batch_stats)}
  return Surface(variables_a, (d,), (np.asarray(alphas, np.float64),), recipe)


@dataclasses.dataclass(frozen=True)
class LandscapeResult:
  """Loss and accuracy on a grid.

  Attributes:
    axes: coordinates per direction.
    loss: grid of shape (n_1[, n_2]); NaN where not computed yet.
    accuracy: same shape, top-1 in [0, 1].
    done: same shape, True where computed.
    bn_mode: 'batch' or 'running'.
    cache_key: SHA-256 of `ingredients`.
    ingredients: what determines the numbers (see `landscape_ingredients`).
    new_points: points evaluated by the call that returned this result.
  """
  axes: tuple[np.ndarray, ...]
  loss: np.ndarray
  accuracy: np.ndarray
  done: np.ndarray
  bn_mode: str
  cache_key: str
  ingredients: dict[str, Any]
  new_points: int

  @property
  def complete(self) -> bool:
    return bool(np.all(self.done))


def landscape_ingredients(model: nn.Module, surface: Surface,
                          batches: Sequence[forward.Batch], bn_mode: str,
                          key: jax.Array, checkpoint_id: str,
                          data_id: str) -> dict[str, Any]:
  """Everything that determines a landscape's numbers, as JSON-able data:
  the model definition (`repr`), the caller's labels, content fingerprints
  of weights / directions / batches, the direction recipe, the exact grid,
  the BN mode and the dropout key."""
  return {
      "format": landscape_cache.FORMAT_VERSION,
      "model": repr(model),
      "checkpoint_id": checkpoint_id,
      "weights": landscape_cache.fingerprint(surface.base),
      "directions": landscape_cache.fingerprint(surface.directions),
      "recipe": surface.recipe,
      "axes": [[float(c) for c in axis] for axis in surface.axes],
      "data_id": data_id,
      "data": landscape_cache.fingerprint(list(batches)),
      "bn_mode": bn_mode,
      "key": np.asarray(jax.random.key_data(key)).tolist(),
  }


def _empty_result(surface: Surface, bn_mode: str, key: str,
                  ingredients: dict[str, Any]) -> LandscapeResult:
  shape = tuple(len(a) for a in surface.axes)
  return LandscapeResult(surface.axes, np.full(shape, np.nan),
                         np.full(shape, np.nan), np.zeros(shape, bool),
                         bn_mode, key, ingredients, 0)


def _load_cached(path: str, key: str) -> LandscapeResult | None:
  if not os.path.exists(path):
    return None
  cached = results_io.load(LandscapeResult, path)
  if cached.cache_key != key:
    raise ValueError(f"{path} holds a landscape with another key; delete "
                     f"it (the file name should match its key).")
  return cached


def compute_landscape(model: nn.Module, surface: Surface,
                      batches: Sequence[forward.Batch], *, bn_mode: str,
                      key: jax.Array | None = None, mesh: Mesh | None = None,
                      cache_dir: str | None = None, checkpoint_id: str = "",
                      data_id: str = "",
                      max_new_points: int | None = None) -> LandscapeResult:
  """Evaluates loss and accuracy at every point of `surface`.

  Args:
    model: the classifier.
    surface: the grid (`random_surface` / `interpolation_surface`).
    batches: evaluation data, dicts {'image', 'label'[, 'mask']}, each
      divisible by the device count; the same batches at every point.
    bn_mode: 'batch' or 'running'.
    key: dropout key ('batch' mode; required there); batch b at every
      point uses fold_in(key, b), so the surface is deterministic.
    mesh: 1-D mesh to split each batch over; None = one device.
    cache_dir: directory for the resumable cache file; None = no cache.
    checkpoint_id, data_id: the caller's labels for the weights and the
      data (e.g. "run3/step_5000", "digits-test-0:256"); hashed into the
      key alongside content fingerprints.
    max_new_points: stop after evaluating this many new points (the partial
      result is saved; call again to continue); None = all.

  Returns:
    A `LandscapeResult`; points are evaluated in row-major grid order.
  """
  forward.check_bn_mode(bn_mode)
  if key is None:
    if bn_mode == "batch":
      raise ValueError("bn_mode='batch' needs a dropout key.")
    key = jax.random.key(0)
  ingredients = landscape_ingredients(model, surface, batches, bn_mode, key,
                                      checkpoint_id, data_id)
  cache_key = landscape_cache.cache_key(ingredients)
  path = (None if cache_dir is None
          else landscape_cache.cache_path(cache_dir, cache_key))
  result = _load_cached(path, cache_key) if path else None
  if result is None:
    result = _empty_result(surface, bn_mode, cache_key, ingredients)
  loss, accuracy, done = (result.loss.copy(), result.accuracy.copy(),
                          result.done.copy())
  evaluate = evaluation.make_evaluator(model, bn_mode=bn_mode, mesh=mesh)
  perturb = jax.jit(lambda base, dirs, c: directions.combine(
      base, dirs, [c[k] for k in range(len(dirs))]))
  new_points = 0
  for index in np.ndindex(*done.shape):
    if done[index]:
      continue
    if max_new_points is not None and new_points >= max_new_points:
      break
    coords = jnp.asarray([axis[i] for axis, i in zip(surface.axes, index)])
    variables = perturb(surface.base, surface.directions, coords)
    loss[index], accuracy[index] = evaluate(variables, batches, key)
    done[index] = True
    new_points += 1
    result = dataclasses.replace(result, loss=loss.copy(),
                                 accuracy=accuracy.copy(), done=done.copy(),
                                 new_points=new_points)
    if path:
      results_io.save(result, path)
  return dataclasses.replace(result, new_points=new_points)
