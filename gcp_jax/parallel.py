"""The device mesh and moving host data onto it, for training and analyses.

One 1-D mesh named `DATA_AXIS` spans every device of every process. Per-host
numpy batches become one global array sharded along the batch axis; the
training state is replicated. The per-device steps (`gcp_jax.train.steps`)
and the analyses (`gcp_jax.analysis`) reduce over the mesh axis with
`lax.pmean` / `lax.psum`, as `jax.pmap` code does; `masked_sums` is the
reduction of every evaluation over padded batches.

The analyses take any 1-D mesh (`resolve_mesh`: None means one device) and
read its axis name with `mesh_axis`.

Synopsis:
  mesh = create_mesh()                 # all devices; create_mesh(4): first 4
  check_batch_size(global_batch, mesh, "training")
  batch = host_batch_to_global(mesh, {"image": x, "label": y})
  state = replicate(mesh, state)
  variables = place(mesh, variables, P())       # analyses: device_put
  sums = masked_sums({"loss_sum": losses}, mask, DATA_AXIS)  # in shard_map
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from gcp_jax.errors import ConfigError

DATA_AXIS = "data"
PyTree = Any


def create_mesh(num_devices: int | None = None,
                explicit: bool = True) -> Mesh:
  """1-D mesh with axis `DATA_AXIS`.

  Args:
    num_devices: None: all devices of all processes, in `jax.make_mesh`'s
      order (training); else the first `num_devices` of `jax.devices()`.
    explicit: the axis type: `AxisType.Explicit` (as training builds it)
      or `AxisType.Auto` (jax's default).
  """
  axis_types = (AxisType.Explicit if explicit else AxisType.Auto,)
  if num_devices is None:
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                         axis_types=axis_types)
  return Mesh(np.array(jax.devices()[:num_devices]), (DATA_AXIS,),
              axis_types=axis_types)


def resolve_mesh(mesh: Mesh | None) -> Mesh:
  """The mesh to map over: `mesh` (must be 1-D), or one device when None."""
  if mesh is None:
    return create_mesh(1, explicit=False)
  if len(mesh.axis_names) != 1:
    raise ValueError(f"The analyses take a 1-D mesh, got axes "
                     f"{mesh.axis_names}.")
  return mesh


def mesh_axis(mesh: Mesh) -> str:
  """The name of the mesh's (only) axis."""
  return mesh.axis_names[0]


def check_batch_size(batch_size: int, mesh: Mesh, what: str) -> None:
  """Raises ConfigError unless `batch_size` (the global batch) splits
  evenly over the devices of `mesh`."""
  devices = mesh.size
  if batch_size <= 0 or batch_size % devices:
    processes = [d.process_index for d in mesh.devices.flat]
    local = processes.count(jax.process_index())
    lower = max(devices, batch_size // devices * devices)
    raise ConfigError(
        f"The {what} batch size {batch_size} is not divisible by the "
        f"{devices} devices ({local} per host x {len(set(processes))} "
        f"hosts); every device needs the same number of examples. Use a "
        f"multiple of {devices}, e.g. {lower} or {lower + devices}.")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Split along the first (batch) axis over the mesh."""
  return NamedSharding(mesh, P(DATA_AXIS))


def host_batch_to_global(mesh: Mesh, batch: dict[str, np.ndarray]
                         ) -> dict[str, jax.Array]:
  """This host's slice of the global batch -> global arrays sharded on the
  batch axis (rows of host i follow those of host i - 1)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items()}


def replicated_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Full replication of an ndim-array. The spec names every axis
  (P(None, ...)), as the mapped steps' outputs do, so the state going in and
  coming out has one type and the step compiles once."""
  return NamedSharding(mesh, P(*([None] * ndim)))


def replicate(mesh: Mesh, tree: PyTree) -> PyTree:
  """Places a pytree (identical on every host) on all devices."""
  def put(x):
    host = np.asarray(x)
    return jax.make_array_from_callback(
        host.shape, replicated_sharding(mesh, host.ndim),
        lambda index: host[index])
  return jax.tree.map(put, tree)


def abstract_replicated(mesh: Mesh, shapes: PyTree) -> PyTree:
  """`jax.ShapeDtypeStruct`s of `shapes` with the sharding `replicate`
  gives: the restore target for a replicated state, without allocating it."""
  return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(
          s.shape, s.dtype, sharding=replicated_sharding(mesh, len(s.shape))),
      shapes)


def place(mesh: Mesh, tree: PyTree, spec: P) -> PyTree:
  """Puts every leaf of `tree` (numpy or jax arrays) on the mesh with
  sharding `spec` (a no-op for leaves already placed so), as meshes with
  explicit axis types require of a mapped function's inputs."""
  return jax.device_put(tree, NamedSharding(mesh, spec))


def device_key(key: jax.Array, axis: str) -> jax.Array:
  """`key` folded with the device index (inside a mapped function), so
  dropout masks differ across devices."""
  return jax.random.fold_in(key, lax.axis_index(axis))


def masked_sums(per_example: dict[str, jax.Array], mask: jax.Array,
                axis: str) -> dict[str, jax.Array]:
  """The evaluation sums over padded batches (inside a mapped function).

  Args:
    per_example: name -> (B,) values of this device's examples.
    mask: (B,) 1 for real examples, 0 for padding (any dtype).
    axis: the mesh axis to add the devices' sums over.

  Returns:
    name -> sum_i mask_i value_i over all devices, and 'count' = sum_i
    mask_i (the number of real examples), as replicated float32 scalars:
    padded examples count nowhere, so every real example counts exactly
    once on any device count.
  """
  mask = mask.astype(jnp.float32)
  sums = {name: jnp.sum(mask * value) for name, value in per_example.items()}
  sums["count"] = jnp.sum(mask)
  return lax.psum(sums, axis)
