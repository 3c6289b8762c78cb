"""The device mesh and moving host data onto it.

One 1-D mesh named `DATA_AXIS` spans every device of every process. Per-host
numpy batches become one global array sharded along the batch axis; the
training state is replicated. The per-device steps (`gcp_jax.train.steps`)
reduce over `DATA_AXIS` with `lax.pmean` / `lax.psum`, as `jax.pmap` code
does.

Synopsis:
  mesh = create_mesh()
  check_batch_size(global_batch, "train")
  batch = host_batch_to_global(mesh, {"image": x, "label": y})
  state = replicate(mesh, state)
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from gcp_jax.errors import ConfigError

DATA_AXIS = "data"
PyTree = Any


def create_mesh() -> Mesh:
  """1-D mesh over all devices of all processes, axis `DATA_AXIS`."""
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(AxisType.Explicit,))


def check_batch_size(global_batch: int, what: str) -> None:
  """Raises ConfigError unless `global_batch` splits evenly over devices."""
  devices, hosts = jax.device_count(), jax.process_count()
  if global_batch <= 0 or global_batch % devices:
    lower = max(devices, global_batch // devices * devices)
    raise ConfigError(
        f"The {what} batch size {global_batch} is not divisible by the "
        f"{devices} devices ({jax.local_device_count()} per host x {hosts} "
        f"hosts); every device needs the same number of examples. Use a "
        f"multiple of {devices}, e.g. {lower} or {lower + devices}.")


def batch_sharding(mesh: Mesh) -> NamedSharding:
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
