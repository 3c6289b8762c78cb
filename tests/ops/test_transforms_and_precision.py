"""Dtype policy, matmul precision, and invariance under jit / vmap / mapping
over the forced CPU devices."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from gcp_jax import ops

RNG = np.random.default_rng(4)
NAMES = sorted(ops.REPRESENTATIONS)


def _feats(b=4):
  return jnp.asarray(np.maximum(RNG.standard_normal((b, 6, 6, 16)), 0.0),
                     jnp.float32)


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_in_float32_out(name):
  x = _feats()
  rep = ops.get_representation(name)
  got = rep(x.astype(jnp.bfloat16))
  assert got.dtype == jnp.float32
  want = rep(x.astype(jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_jit_and_vmap_unchanged(name):
  x = _feats()
  rep = ops.get_representation(name)
  eager = np.asarray(rep(x))
  np.testing.assert_allclose(jax.jit(rep)(x), eager, rtol=1e-5, atol=1e-6)
  vmapped = jax.vmap(lambda xi: rep(xi[None])[0])(x)
  np.testing.assert_allclose(vmapped, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_shard_map_over_devices_unchanged(name):
  """Each of the 4 forced CPU devices pools its own samples."""
  n = jax.device_count()
  assert n == 4, "tests/conftest.py forces 4 CPU devices"
  mesh = jax.make_mesh((n,), ("data",))
  rep = ops.get_representation(name)
  x = jax.device_put(_feats(2 * n), NamedSharding(mesh, P("data")))
  mapped = jax.jit(jax.shard_map(rep, mesh=mesh, in_specs=P("data"),
                                 out_specs=P("data")))(x)
  np.testing.assert_allclose(mapped, rep(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["isqrt", "eig", "none", "svpn"])
def test_every_dot_is_highest_precision(name):
  """All matmuls, forward and backward, request HIGHEST precision even when
  the global default says bfloat16."""
  rep = ops.get_representation(name)
  x = _feats()
  with jax.default_matmul_precision("bfloat16"):
    hlo = jax.jit(jax.grad(lambda x: jnp.sum(rep(x)))).lower(x).as_text()
  dots = re.findall(r"stablehlo\.dot_general.*", hlo)
  assert dots
  for dot in dots:
    assert "precision = [HIGHEST, HIGHEST]" in dot, dot
