"""Loss stability and gradient predictiveness along the activation gradient.

The GCP_Optimization probe (docs/method.md §10.1, after Santurkar et al.
2018).
The network is split into `base` (the stem of a ResNet) and `rest`. On one
batch (x_i, y_i), i = 1..B (the GLOBAL batch, across all devices):

  X        = base(x)                                   (fixed, not perturbed)
  L(X)     = (1/B) sum_i loss(rest(X)_i, y_i)          (batch-mean loss)
  g0       = dL/dX (X)                                 (same shape as X)
  for each eta in the grid (default 50 values linspace(0.1, 75, 50)):
    loss(eta)        = L(X + eta g0)
    grad_change(eta) = || dL/dX (X + eta g0) - g0 ||_2

The step goes along +gradient (ascent), as in the reference code. g0 is the
gradient of the batch MEAN, so it carries the factor 1/B, and the norm is
the Euclidean norm of the whole (B, ...) tensor.

Devices. The batch is split over the mesh axis; device d holds X_d. The
per-device function computes s_d(X_d) = sum of its examples' losses and
L = psum(s_d) / B (B = global batch). dL/dX_d is obtained by differentiating
s_d / B with respect to X_d on every device at once: when BN statistics are
synchronised (model built with bn_axis_name = the mesh axis), the backward
pass of the cross-device mean carries every device's contribution back, so
the slice is the exact global gradient; the norm is sqrt(psum(||.||^2_d)).
The result then equals the one-device result on the same global batch. With
per-device BN ('batch' mode, no bn_axis_name) each device normalises its own
slice, as the reference's DataParallel runs do.

In 'batch' mode DropCov heads draw their dropout masks from `key` folded
with the device index; the same masks are used at every eta, so the curve is
a function of eta alone.

The eta grid runs as ceil(E / eta_batch_size) calls of one compiled
function, each evaluating `eta_batch_size` step sizes vectorised (`vmap`);
X and g0 are computed once per probe by a second compiled function and stay
on the devices in between. Both are compiled once per input shape, so the
probe can be called every K training steps. (A host loop rather than
`lax.map` over the grid: XLA:CPU runs convolutions inside loop bodies far
slower than outside them, and slower still with
JAX_DISABLE_MOST_OPTIMIZATIONS, as the tests run; on accelerators the two
forms cost the same. Measurements: benchmarks/RESULTS.md, "Numbers from
library and test docstrings".)

Synopsis:
  probe = make_gradient_probe(resnet_split(model), bn_mode="batch", mesh=mesh)
  result = probe(variables, images, labels, key, step=1000)
  band = lipschitz_band(result)      # min/max over eta: the papers' band
"""

import dataclasses
import json
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from gcp_jax import backend, parallel
from gcp_jax.analysis import forward, results_io

# (variables, inputs, bn_mode, key) -> outputs
SplitFn = Callable[[forward.Variables, jax.Array, str, jax.Array], jax.Array]


def default_etas(start: float = 0.1, stop: float = 75.0,
                 num: int = 50) -> np.ndarray:
  """The reference grid: `num` linear values from `start` to `stop`
  inclusive (ResNet: 0.1..75; MobileNetV2 used 0.045..1.5)."""
  return np.linspace(start, stop, num)


@dataclasses.dataclass(frozen=True)
class Split:
  """A network cut in two: outputs = rest(base(inputs)).

  Both take (variables, inputs, bn_mode, key); the key feeds the 'dropout'
  stream in 'batch' mode.
  """
  base: SplitFn
  rest: SplitFn


def resnet_split(model: nn.Module) -> Split:
  """Split of a `gcp_jax.models` ResNet after its stem (methods 'stem' and
  'from_stem'): X = input of layer1."""
  def base(variables, images, bn_mode, key):
    return forward.apply_model(model, variables, images, bn_mode, key, "stem")

  def rest(variables, x, bn_mode, key):
    return forward.apply_model(model, variables, x, bn_mode, key,
                               "from_stem")
  return Split(base, rest)


@dataclasses.dataclass(frozen=True)
class GradientProbeResult:
  """One probe on one batch.

  Attributes:
    etas: (E,) step sizes.
    losses: (E,) L(X + eta g0).
    grad_changes: (E,) ||dL/dX(X + eta g0) - g0||_2.
    base_loss: L(X).
    base_grad_norm: ||g0||_2.
    bn_mode: 'batch' or 'running'.
    batch_size: global batch size B.
    num_devices: devices the batch was split over.
    step: training step of the (pre-update) weights, if given.
  """
  etas: np.ndarray
  losses: np.ndarray
  grad_changes: np.ndarray
  base_loss: float
  base_grad_norm: float
  bn_mode: str
  batch_size: int
  num_devices: int
  step: int | None = None


@dataclasses.dataclass(frozen=True)
class LipschitzBand:
  """Ranges over the eta grid of one probe (the shaded band per training
  step in the papers' Lipschitzness figure)."""
  loss_min: float
  loss_max: float
  grad_change_min: float
  grad_change_max: float
  step: int | None


def lipschitz_band(result: GradientProbeResult) -> LipschitzBand:
  """min / max of the loss and of the gradient change over the eta grid."""
  return LipschitzBand(
      float(np.min(result.losses)), float(np.max(result.losses)),
      float(np.min(result.grad_changes)), float(np.max(result.grad_changes)),
      result.step)


ProbeFn = Callable[..., GradientProbeResult]


def make_gradient_probe(split: Split, *, bn_mode: str,
                        etas: np.ndarray | None = None,
                        mesh: Mesh | None = None,
                        loss_fn: forward.LossFn = forward.cross_entropy_loss,
                        eta_batch_size: int = 1) -> ProbeFn:
  """Builds the compiled probe.

  Args:
    split: the network cut (`resnet_split(model)` or custom functions).
    bn_mode: 'batch' (the reference) or 'running'; recorded in the result.
    etas: (E,) step sizes; default `default_etas()`.
    mesh: 1-D device mesh to split the batch over; None = one device.
    loss_fn: (outputs (B, ...), targets (B, ...)) -> (B,) per-example
      losses; default cross-entropy with integer labels.
    eta_batch_size: step sizes evaluated together (vectorised) per compiled
      call; 1 = one at a time (least memory).

  Returns:
    probe(variables, inputs, targets, key, step=None) -> GradientProbeResult.
    `inputs`/`targets` are the global batch (numpy or global jax arrays,
    batch first); B must be divisible by the number of devices.
  """
  forward.check_bn_mode(bn_mode)
  etas = default_etas() if etas is None else np.asarray(etas)
  if etas.ndim != 1 or not etas.size:
    raise ValueError(f"probe: etas must be a non-empty 1-D grid, got shape "
                     f"{etas.shape}.")
  if not isinstance(eta_batch_size, int) or eta_batch_size < 1:
    raise ValueError(f"probe: eta_batch_size must be an int >= 1, got "
                     f"{eta_batch_size!r}.")
  mesh = parallel.resolve_mesh(mesh)
  axis = parallel.mesh_axis(mesh)

  def local_mean_part(variables, x, targets, key):
    """This device's share of the global mean loss: s_d / B."""
    outputs = split.rest(variables, x, bn_mode, key)
    return jnp.sum(loss_fn(outputs, targets)) / (x.shape[0] * mesh.size)

  def global_norm(t):
    return jnp.sqrt(lax.psum(jnp.sum(jnp.square(t)), axis))

  def base_per_device(variables, inputs, targets, key):
    key = parallel.device_key(key, axis)
    x = lax.stop_gradient(split.base(variables, inputs, bn_mode, key))
    part, g0 = jax.value_and_grad(local_mean_part, argnums=1)(
        variables, x, targets, key)
    return x, g0, lax.psum(part, axis), global_norm(g0)

  def etas_per_device(variables, x, g0, targets, key, eta_chunk):
    key = parallel.device_key(key, axis)

    def at_eta(eta):
      part, g = jax.value_and_grad(local_mean_part, argnums=1)(
          variables, x + eta * g0, targets, key)
      return lax.psum(part, axis), global_norm(g - g0)
    return jax.vmap(at_eta)(eta_chunk)

  base_fn = backend.jit(jax.shard_map(
      base_per_device, mesh=mesh, in_specs=(P(), P(axis), P(axis), P()),
      out_specs=(P(axis), P(axis), P(), P())))
  etas_fn = backend.jit(jax.shard_map(
      etas_per_device, mesh=mesh,
      in_specs=(P(), P(axis), P(axis), P(axis), P(), P()), out_specs=P()))
  # The grid padded with its last value to whole chunks (padding discarded),
  # placed on the mesh once.
  num_chunks = -(-len(etas) // eta_batch_size)
  padded = np.concatenate(
      [etas, np.full(num_chunks * eta_batch_size - len(etas), etas[-1])])
  chunks = parallel.place(
      mesh, list(padded.reshape(num_chunks, eta_batch_size)), P())

  def probe(variables: forward.Variables, inputs: Any, targets: Any,
            key: jax.Array, step: int | None = None) -> GradientProbeResult:
    batch_size = int(np.shape(inputs)[0])
    parallel.check_batch_size(batch_size, mesh, "probe")
    variables, key = parallel.place(mesh, (variables, key), P())
    inputs, targets = parallel.place(mesh, (inputs, targets), P(axis))
    x, g0, base_loss, g0_norm = base_fn(variables, inputs, targets, key)
    parts = [etas_fn(variables, x, g0, targets, key, chunk)
             for chunk in chunks]
    losses, changes = (np.concatenate(v)[:len(etas)]
                       for v in zip(*jax.device_get(parts)))
    return GradientProbeResult(
        np.asarray(etas), losses, changes, float(base_loss), float(g0_norm),
        bn_mode, batch_size, mesh.size, None if step is None else int(step))
  return probe


def save_results(results: list[GradientProbeResult], path: str) -> None:
  """Writes a list of probe results (e.g. one per training step) as one
  JSON file: {"probes": [...]}, atomically."""
  data = {"probes": [results_io.to_dict(r) for r in results]}
  results_io.atomic_write_json(path, data)


def load_results(path: str) -> list[GradientProbeResult]:
  """Inverse of `save_results`."""
  with open(path) as f:
    data = json.load(f)
  return [results_io.from_dict(GradientProbeResult, r)
          for r in data["probes"]]
