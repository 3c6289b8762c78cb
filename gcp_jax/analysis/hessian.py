"""The Hessian of a model's loss as a matrix-free operator (for `spectral`).

For batches b = 1..n_b of B examples each (N = n_b B samples in all), a
block w of the parameters (the rest, and the BN statistics, held fixed):

  L(w) = (1/N) sum_b sum_{i in b} loss(f_b(x_i; w), y_i)
  H v  = d/dt grad L(w + t v) |_{t=0}         (forward-over-reverse:
                                               jax.jvp of jax.grad)

where f_b is the model in the given BN mode: 'running' uses the running
statistics (then L is the plain mean over the N samples); 'batch'
normalises each batch with its own statistics (then L is the mean of the
n_b batch-mean losses, each batch's Hessian including the dependence of the
statistics on w). A model whose DropCov head is active in 'batch' mode draws
its masks from fold_in(key, b), the same at every matvec, so L is one fixed
function.

Blocks. Parameter paths are '/'-joined (e.g. 'layer4/block0/conv1/kernel',
'head/fc/bias'); `block` is a regular expression matched at the START of the
path (`re.match`): 'head', 'layer4', 'layer[34]', 'head/fc/'. None = every
parameter. The operator acts on the flat vector of the block's parameters
(`jax.flatten_util.ravel_pytree` order); `ModelHessian.unravel` maps a
vector back to {path: array}.

Devices. The stacked batches (n_b, B, ...) are placed once, split along B
over the mesh axis. Each device runs the per-batch HVP of the SUM of its
examples' losses over all batches (`lax.scan`, one batch in memory at a
time), with respect to a device-varying copy of w (`lax.pcast`), and the
results are added with `lax.psum` and divided by N. With synchronised BN
(bn_axis_name = mesh axis) the backward pass of the cross-device statistics
returns every device's contribution, so the product equals the one-device
product; with per-device BN in 'batch' mode each device uses the statistics
of its own slice.

Synopsis:
  hess = model_hessian(model, variables, batches, bn_mode="running",
                       block="head", mesh=mesh)
  top = spectral.lanczos_top(hess.operator, k=3, num_steps=40, key=key)
  tr = spectral.hutchinson_trace(hess.operator, 100, key)
"""

import dataclasses
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import traverse_util
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, PartitionSpec as P

from gcp_jax import parallel
from gcp_jax.analysis import forward, spectral


def parameter_paths(params: Any) -> list[str]:
  """'/'-joined paths of every parameter leaf, in sorted order."""
  return sorted(traverse_util.flatten_dict(params, sep="/"))


def select_block(params: Any, block: str | None) -> list[str]:
  """Paths whose start matches the regular expression `block` (all if
  None); raises ValueError, listing the top-level names, if none does."""
  paths = parameter_paths(params)
  if block is None:
    return paths
  chosen = [p for p in paths if re.match(block, p)]
  if not chosen:
    tops = sorted({p.split("/")[0] for p in paths})
    raise ValueError(f"No parameter path matches {block!r}; top-level "
                     f"names: {', '.join(tops)}.")
  return chosen


@dataclasses.dataclass(frozen=True)
class ModelHessian:
  """The Hessian of the block's loss, and how it was defined.

  Attributes:
    operator: v (dim,) -> H v, for `spectral`.
    paths: the parameters in the block.
    unravel: flat (dim,) vector -> {path: array}.
    block: the selecting expression (None = all parameters).
    bn_mode: 'batch' or 'running'.
    num_samples: N.
    num_batches: n_b.
  """
  operator: spectral.SymmetricOperator
  paths: tuple[str, ...]
  unravel: Callable[[jax.Array], dict[str, jax.Array]]
  block: str | None
  bn_mode: str
  num_samples: int
  num_batches: int


def model_hessian(model: Any, variables: forward.Variables,
                  batches: Sequence[forward.Batch], *, bn_mode: str,
                  key: jax.Array | None = None, block: str | None = None,
                  mesh: Mesh | None = None,
                  loss_fn: forward.LossFn = forward.cross_entropy_loss
                  ) -> ModelHessian:
  """Builds the Hessian operator of `loss_fn` averaged over `batches`.

  Args:
    model: Flax module, `model.apply(variables, batch['image'], train)`.
    variables: {'params'[, 'batch_stats']}; the block's dtype is the dtype
      of the vectors (float32, or float64 under `jax.enable_x64`).
    batches: equal-shape, unpadded batches {'image', 'label'}; B divisible
      by the device count. All are kept on the devices.
    bn_mode: 'batch' or 'running'.
    key: dropout key for 'batch' mode (required there).
    block: regular expression selecting parameter paths (see module doc).
    mesh: 1-D mesh; None = one device.
    loss_fn: (outputs, labels) -> (B,) per-example losses.

  Returns:
    A `ModelHessian` whose operator is compiled on first use.
  """
  forward.check_bn_mode(bn_mode)
  if key is None:
    if bn_mode == "batch":
      raise ValueError("bn_mode='batch' needs a dropout key.")
    key = jax.random.key(0)
  forward.check_unpadded(batches, "Hessian")
  mesh = parallel.resolve_mesh(mesh)
  axis = parallel.mesh_axis(mesh)
  data = forward.stack_batches(batches, ("image", "label"))
  num_batches, batch_size = data["label"].shape[:2]
  parallel.check_batch_size(batch_size, mesh, "Hessian")
  num_samples = num_batches * batch_size

  flat = traverse_util.flatten_dict(variables["params"], sep="/")
  paths = select_block(variables["params"], block)
  block_flat, unravel = ravel_pytree({p: flat[p] for p in paths})
  frozen = {p: v for p, v in flat.items() if p not in paths}
  stats = variables.get("batch_stats", {})

  def per_device(w, frozen, stats, data, key, v):
    w = lax.pcast(w, axis, to="varying")
    v = lax.pcast(v, axis, to="varying")

    def batch_loss_sum(w, images, labels, batch_key):
      params = traverse_util.unflatten_dict({**frozen, **unravel(w)},
                                            sep="/")
      outputs = forward.apply_model(
          model, {"params": params, "batch_stats": stats}, images, bn_mode,
          batch_key)
      return jnp.sum(loss_fn(outputs, labels))

    def add_batch(total, xs):
      images, labels, index = xs
      batch_key = parallel.device_key(jax.random.fold_in(key, index), axis)
      grad = jax.grad(lambda u: batch_loss_sum(u, images, labels, batch_key))
      return total + jax.jvp(grad, (w,), (v,))[1], None

    total, _ = lax.scan(add_batch, jnp.zeros_like(w),
                        (data["image"], data["label"],
                         jnp.arange(num_batches)))
    return lax.psum(total, axis) / num_samples

  mapped = jax.jit(jax.shard_map(
      per_device, mesh=mesh,
      in_specs=(P(), P(), P(), P(None, axis), P(), P()), out_specs=P()))

  def apply(operand, v):
    return mapped(*operand, v)

  operand = (*parallel.place(mesh, (block_flat, frozen, stats), P()),
             parallel.place(mesh, data, P(None, axis)),
             parallel.place(mesh, key, P()))
  operator = spectral.SymmetricOperator(apply, operand, int(block_flat.size),
                                        block_flat.dtype)
  return ModelHessian(operator, tuple(paths), unravel, block, bn_mode,
                      int(num_samples), int(num_batches))
