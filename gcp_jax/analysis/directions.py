"""Directions in weight space for loss landscapes (Li et al., NeurIPS 2018).

A direction has the structure of the model's variables, {'params': ...,
'batch_stats': ...}, so a point of a landscape is

  theta(c) = theta_0 + sum_k c_k d_k        (every leaf, both collections)

Filter normalisation. A random Gaussian direction is rescaled filter by
filter so that each filter of the direction has the norm of the
corresponding filter of the weights. A filter is one OUTPUT channel: the
last axis of Flax kernels (Conv HWIO: d[..., f]; Dense (in, out): d[:, f]):

  d[..., f] <- d[..., f] * ||w[..., f]|| / ||d[..., f]||

Leaves with ndim <= 1 (biases, BatchNorm scale/bias and running statistics,
DropCov's ECA kernel) follow `one_d`:

  'zero'    d = 0: these leaves do not move (Li et al.'s `ignore='biasbn'`);
  'filter'  the whole vector is one filter: d <- d ||w|| / ||d||;
  'copy'    d = w (what Li et al.'s code does when they are not ignored).

`include_batch_stats` (Li et al.'s `dir_type='states'`) gives the running
statistics a direction by the same 1-D rule; otherwise their direction is 0.
Moving running variances can make them negative (NaN losses in 'running' BN
mode) once a coordinate passes -1 ('copy') or the variance's own scale.

Synopsis:
  d = random_direction(jax.random.key(0), variables, one_d="zero")
  d_ab = difference(variables_a, variables_b)      # theta_a + 1 d_ab = theta_b
  theta = combine(variables, [d1, d2], [0.5, -0.2])
"""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gcp_jax.analysis.forward import Variables

ONE_D_MODES = ("zero", "filter", "copy")


def _check_one_d(one_d: str) -> None:
  if one_d not in ONE_D_MODES:
    raise ValueError(f"one_d must be one of {ONE_D_MODES}, got {one_d!r}.")


def _normalize_leaf(d: jax.Array, w: jax.Array, one_d: str) -> jax.Array:
  """One leaf of `filter_normalize`."""
  if d.ndim >= 2:
    axes = tuple(range(d.ndim - 1))
    d_norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
    w_norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=axes, keepdims=True))
    return d * (w_norm / jnp.maximum(d_norm, jnp.finfo(d.dtype).tiny))
  if one_d == "zero":
    return jnp.zeros_like(d)
  if one_d == "copy":
    return w
  d_norm = jnp.sqrt(jnp.sum(jnp.square(d)))
  return d * (jnp.linalg.norm(w) / jnp.maximum(d_norm,
                                               jnp.finfo(d.dtype).tiny))


def filter_normalize(direction: Any, weights: Any, one_d: str = "zero"
                     ) -> Any:
  """Rescales `direction` filter-wise to the norms of `weights` (same tree).

  Args:
    direction: a pytree of arrays (e.g. Gaussian noise).
    weights: the pytree of weights it is attached to.
    one_d: rule for leaves with ndim <= 1: 'zero', 'filter' or 'copy'.

  Returns:
    The normalised direction (same structure and dtypes).
  """
  _check_one_d(one_d)
  return jax.tree.map(lambda d, w: _normalize_leaf(d, w, one_d),
                      direction, weights)


def _gaussian_like(key: jax.Array, tree: Any) -> Any:
  """Standard normal noise shaped like `tree` (one draw, split by leaf)."""
  flat, unravel = ravel_pytree(tree)
  return unravel(jax.random.normal(key, flat.shape, flat.dtype))


@functools.partial(jax.jit, static_argnames=("one_d", "include_batch_stats"))
def random_direction(key: jax.Array, variables: Variables, *,
                     one_d: str = "zero", include_batch_stats: bool = False
                     ) -> dict[str, Any]:
  """A filter-normalised Gaussian direction for `variables`.

  Args:
    key: PRNG key; the same key and variables give the same direction.
    variables: {'params': ...[, 'batch_stats': ...]}.
    one_d: rule for 1-D leaves (see the module docstring).
    include_batch_stats: also move the BN running statistics (by the 1-D
      rule); otherwise their direction is zero.

  Returns:
    A direction with the structure of `variables` (compiled once per
    variables structure and options).
  """
  _check_one_d(one_d)
  key_p, key_s = jax.random.split(key)
  out = {"params": filter_normalize(_gaussian_like(key_p, variables["params"]),
                                    variables["params"], one_d)}
  if "batch_stats" in variables:
    stats = variables["batch_stats"]
    out["batch_stats"] = (
        filter_normalize(_gaussian_like(key_s, stats), stats, one_d)
        if include_batch_stats else jax.tree.map(jnp.zeros_like, stats))
  return out


def difference(variables_a: Variables, variables_b: Variables, *,
               include_batch_stats: bool = True) -> dict[str, Any]:
  """d = theta_b - theta_a, so theta_a + alpha d interpolates linearly
  (alpha = 0: a, alpha = 1: b). Without `include_batch_stats` the running
  statistics stay those of a along the whole path."""
  out = {"params": jax.tree.map(jnp.subtract, variables_b["params"],
                                variables_a["params"])}
  if "batch_stats" in variables_a:
    out["batch_stats"] = jax.tree.map(
        (jnp.subtract if include_batch_stats
         else lambda b, a: jnp.zeros_like(a)),
        variables_b["batch_stats"], variables_a["batch_stats"])
  return out


def combine(variables: Variables, directions: Sequence[Any],
            coords: Sequence[Any]) -> dict[str, Any]:
  """theta_0 + sum_k coords[k] directions[k], leaf by leaf."""
  def point(w, *ds):
    return w + sum(c * d for c, d in zip(coords, ds)).astype(w.dtype)
  return jax.tree.map(point, dict(variables), *directions)
