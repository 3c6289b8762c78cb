"""Dtype policy, matmul precision, and invariance under jit / vmap / mapping
over the forced CPU devices."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from gcp_jax import ops

RNG = np.random.default_rng(4)
NAMES = sorted(ops.REPRESENTATIONS)
# (representation, options, feature map side): every representation with its
# defaults on 36 positions x 16 channels, and isqrt's eigh method on both of
# its paths (C x C eigh for M >= C, M x M Gram eigh for M = 9 < C).
CASES = [(name, {}, 6) for name in NAMES] + [
    ("isqrt", {"method": "eigh"}, 6), ("isqrt", {"method": "eigh"}, 3)]
CASE_IDS = [f"{n}-{o.get('method', 'default')}-{s}x{s}" for n, o, s in CASES]


def _feats(b=4, side=6):
  return jnp.asarray(np.maximum(RNG.standard_normal((b, side, side, 16)), 0.0),
                     jnp.float32)


def _rep(name, options):
  return functools.partial(ops.get_representation(name), **options)


@pytest.mark.parametrize("name,options,side", CASES, ids=CASE_IDS)
def test_bfloat16_in_float32_out(name, options, side):
  x = _feats(side=side)
  rep = _rep(name, options)
  got = rep(x.astype(jnp.bfloat16))
  assert got.dtype == jnp.float32
  want = rep(x.astype(jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,options,side", CASES, ids=CASE_IDS)
def test_jit_and_vmap_unchanged(name, options, side):
  x = _feats(side=side)
  rep = _rep(name, options)
  eager = np.asarray(rep(x))
  np.testing.assert_allclose(jax.jit(rep)(x), eager, rtol=1e-5, atol=1e-6)
  vmapped = jax.vmap(lambda xi: rep(xi[None])[0])(x)
  np.testing.assert_allclose(vmapped, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,options,side", CASES, ids=CASE_IDS)
def test_shard_map_over_devices_unchanged(name, options, side):
  """Each of the 4 forced CPU devices pools its own samples."""
  n = jax.device_count()
  assert n == 4, "tests/conftest.py forces 4 CPU devices"
  mesh = jax.make_mesh((n,), ("data",))
  rep = _rep(name, options)
  x = jax.device_put(_feats(2 * n, side), NamedSharding(mesh, P("data")))
  mapped = jax.jit(jax.shard_map(rep, mesh=mesh, in_specs=P("data"),
                                 out_specs=P("data")))(x)
  np.testing.assert_allclose(mapped, rep(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,options,side",
                         [c for c in CASES if c[0] in ("isqrt", "eig", "none",
                                                       "svpn")])
def test_every_dot_is_highest_precision(name, options, side):
  """All matmuls, forward and backward, request HIGHEST precision even when
  the global default says bfloat16."""
  rep = _rep(name, options)
  x = _feats(side=side)
  with jax.default_matmul_precision("bfloat16"):
    hlo = jax.jit(jax.grad(lambda x: jnp.sum(rep(x)))).lower(x).as_text()
  dots = re.findall(r"stablehlo\.dot_general.*", hlo)
  assert dots
  for dot in dots:
    assert "precision = [HIGHEST, HIGHEST]" in dot, dot
