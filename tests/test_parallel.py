"""`gcp_jax.parallel`: the meshes, the batch-size check and the masked sums
that training and the analyses share (4 forced CPU devices)."""

import jax
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from gcp_jax import parallel
from gcp_jax.errors import ConfigError


def test_meshes_over_all_or_the_first_devices():
  full = parallel.create_mesh()
  assert (full.axis_names, full.size) == (("data",), jax.device_count())
  assert full.axis_types == (AxisType.Explicit,)
  two = parallel.create_mesh(2, explicit=False)
  assert list(two.devices.flat) == jax.devices()[:2]
  assert two.axis_types == (AxisType.Auto,)
  assert parallel.resolve_mesh(None) == parallel.create_mesh(1,
                                                             explicit=False)
  assert parallel.resolve_mesh(two) is two
  assert parallel.mesh_axis(two) == parallel.DATA_AXIS


def test_resolve_mesh_rejects_a_2d_mesh():
  mesh = jax.make_mesh((2, 2), ("a", "b"))
  with pytest.raises(ValueError, match="1-D mesh"):
    parallel.resolve_mesh(mesh)


@pytest.mark.parametrize("batch_size", [6, 0])
def test_batch_size_check_names_the_fix(batch_size):
  mesh = parallel.create_mesh(4, explicit=False)
  parallel.check_batch_size(8, mesh, "probe")
  with pytest.raises(ConfigError, match=(
      rf"The probe batch size {batch_size} is not divisible by the 4 devices "
      r"\(4 per host x 1 hosts\).* e\.g\. 4 or 8\.")):
    parallel.check_batch_size(batch_size, mesh, "probe")


def test_masked_sums_count_every_real_example_once():
  mesh = parallel.create_mesh(4)
  values = np.arange(8, dtype=np.float32)
  mask = np.array([1, 1, 1, 1, 1, 0, 0, 0], np.int32)
  sums = jax.jit(jax.shard_map(
      lambda v, m: parallel.masked_sums({"v_sum": v}, m, parallel.DATA_AXIS),
      mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P()))(
          *parallel.place(mesh, (values, mask), P("data")))
  assert jax.device_get(sums) == {"v_sum": 10.0, "count": 5.0}
