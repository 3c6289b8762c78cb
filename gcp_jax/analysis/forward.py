"""Model forward passes in an explicit BatchNorm mode, and checks of the
batches the analyses take.

Every analysis evaluates the model in one of two BN modes, always passed
explicitly and recorded with the results:

  'batch'    the training forward: `train=True`, BatchNorm normalises with
             the statistics of the batch it sees (as the GCP_Optimization
             probe does); the updated running averages are discarded;
             DropCov's attention and channel dropout are active and draw
             their masks from the given key (stream 'dropout'), and so
             does a ViT's drop-path.
  'running'  the evaluation forward: `train=False`, BatchNorm uses the
             running averages; no randomness.

Device sharding follows the training steps (`gcp_jax.train.steps`, pmap
style): a 1-D `jax.sharding.Mesh` (axis name `mesh.axis_names[0]`), a
per-device function mapped with `jax.shard_map` under `jax.jit`, sums and
counts combined with `lax.psum`. `mesh=None` means one device (a 1-device
mesh with axis `gcp_jax.parallel.DATA_AXIS`), so there is one code path;
the meshes, placement and batch-size check are `gcp_jax.parallel`'s.

In 'batch' mode each device normalises with the statistics of its own slice
of the batch unless the model was built with `bn_axis_name` equal to the
mesh axis (synchronised BN, statistics of the global batch). Results then
depend on the device count in the first case, not in the second.

Synopsis:
  logits = apply_model(model, variables, images, "batch", key)
  data = stack_batches(batches, ("image", "label"))   # (N, B, ...)
"""

from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from flax import linen as nn

from gcp_jax.ops.losses import cross_entropy

BN_MODES = ("batch", "running")

PyTree = Any
Variables = Mapping[str, PyTree]          # {'params': ..., 'batch_stats': ...}
Batch = Mapping[str, Any]                 # {'image', 'label'[, 'mask']}
LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def check_bn_mode(bn_mode: str) -> None:
  """Raises ValueError unless `bn_mode` is one of `BN_MODES`."""
  if bn_mode not in BN_MODES:
    raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}.")


def apply_model(model: nn.Module, variables: Variables, inputs: jax.Array,
                bn_mode: str, key: jax.Array | None,
                method: str | None = None) -> jax.Array:
  """`model.apply` in the given BN mode (see the module docstring).

  Args:
    model: a Flax Linen module whose methods take `(inputs, train)`.
    variables: {'params': ..., 'batch_stats': ...} ('batch_stats' may be
      absent for models without BatchNorm).
    inputs: the method's input, batch first.
    bn_mode: 'batch' or 'running'.
    key: PRNG key of the 'dropout' stream, used in 'batch' mode only.
    method: name of the module method (None: `__call__`), e.g. 'stem'.

  Returns:
    The method's output; in 'batch' mode the batch-statistics updates are
    dropped.
  """
  check_bn_mode(bn_mode)
  if bn_mode == "running":
    return model.apply(variables, inputs, False, method=method)
  out, _ = model.apply(variables, inputs, True, method=method,
                       mutable=["batch_stats"], rngs={"dropout": key})
  return out


def cross_entropy_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example cross-entropy (no label smoothing): (B, K), (B,) -> (B,)."""
  return cross_entropy(logits, labels, 0.0)


def check_unpadded(batches: Sequence[Batch], what: str) -> None:
  """Raises ValueError if a batch has a 'mask' with padded (0) entries.

  Used where every example must be real: batch-statistics BN (padding
  would enter the statistics) and the Hessian (a plain mean over samples).
  """
  for i, batch in enumerate(batches):
    if "mask" in batch and not np.all(np.asarray(batch["mask"]) == 1):
      raise ValueError(
          f"Batch {i} of the {what} data is padded (its 'mask' has zeros); "
          f"here every example must be real. Drop the padded examples or "
          f"use full batches.")


def stack_batches(batches: Sequence[Batch], keys: Sequence[str]
                  ) -> dict[str, np.ndarray]:
  """Equal-shape batches -> {key: (num_batches, B, ...)} numpy arrays."""
  if not batches:
    raise ValueError("At least one batch is needed.")
  shapes = {tuple(np.shape(b[k]) for k in keys) for b in batches}
  if len(shapes) != 1:
    raise ValueError(f"All batches must have the same shapes; got "
                     f"{sorted(shapes)}.")
  return {k: np.stack([np.asarray(b[k]) for b in batches]) for k in keys}
