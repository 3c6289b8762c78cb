"""Classification loss and accuracy of a model over a list of batches,
sharded over a device mesh.

For batches b = 1..n with examples i and mask m_i (1 if absent):

  loss     = sum_b sum_i m_i CE(f(x_i), y_i) / sum_b sum_i m_i
  accuracy = sum_b sum_i m_i [argmax f(x_i) = y_i] / sum_b sum_i m_i

Each batch is split over the mesh axis; every device sums its examples and
`lax.psum` adds the sums, so the numbers do not depend on the device count
(in 'batch' BN mode only when BN is synchronised, see `forward`). In 'batch'
mode padded examples would enter the BN statistics, so padded batches are
rejected there, and batch b's dropout key is `fold_in(key, b)` (then folded
with the device index).

Synopsis:
  evaluate = make_evaluator(model, bn_mode="running", mesh=mesh)
  loss, accuracy = evaluate(variables, batches, key)
"""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, PartitionSpec as P

from gcp_jax import backend, parallel
from gcp_jax.analysis import forward

EvaluateFn = Callable[[forward.Variables, Sequence[forward.Batch],
                       jax.Array], tuple[float, float]]


def make_evaluator(model: nn.Module, *, bn_mode: str,
                   mesh: Mesh | None = None) -> EvaluateFn:
  """Builds `evaluate(variables, batches, key) -> (loss, accuracy)`.

  Args:
    model: classifier, `model.apply(variables, images, train)` -> logits.
    bn_mode: 'batch' or 'running'.
    mesh: 1-D mesh to split each batch over; None = one device.

  Returns:
    The evaluation function; batches are dicts with 'image', 'label' and
    optionally 'mask', each batch divisible by the device count. It is
    compiled once per batch shape.
  """
  forward.check_bn_mode(bn_mode)
  mesh = parallel.resolve_mesh(mesh)
  axis = parallel.mesh_axis(mesh)

  def per_device(variables, images, labels, mask, key):
    logits = forward.apply_model(model, variables, images, bn_mode,
                                 parallel.device_key(key, axis))
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return parallel.masked_sums(
        {"loss_sum": forward.cross_entropy_loss(logits, labels),
         "correct_sum": correct}, mask, axis)

  batch_sums = backend.jit(jax.shard_map(
      per_device, mesh=mesh,
      in_specs=(P(), P(axis), P(axis), P(axis), P()), out_specs=P()))

  def evaluate(variables, batches, key):
    if bn_mode == "batch":
      forward.check_unpadded(batches, "evaluation")
    if not batches:
      raise ValueError("At least one evaluation batch is needed.")
    variables, key = parallel.place(mesh, (variables, key), P())
    total = None
    for b, batch in enumerate(batches):
      size = int(np.shape(batch["label"])[0])
      parallel.check_batch_size(size, mesh, "evaluation")
      mask = batch.get("mask")
      mask = np.ones(size, np.float32) if mask is None else mask
      images, labels, mask = parallel.place(
          mesh, (batch["image"], batch["label"], mask), P(axis))
      sums = batch_sums(variables, images, labels,
                        mask.astype(jnp.float32), jax.random.fold_in(key, b))
      total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    total = {k: np.float64(v) for k, v in jax.device_get(total).items()}
    return (float(total["loss_sum"] / total["count"]),
            float(total["correct_sum"] / total["count"]))
  return evaluate
