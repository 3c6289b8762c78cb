"""DropCov pieces: attention, per-device vs global rate, traced dropout."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from gcp_jax import ops
from tests.ops import references as ref

RNG = np.random.default_rng(7)


def _cosines(x, a):
  b, h, w, d = x.shape
  rows = ref.covariance(np.asarray(x, np.float64).reshape(b, h * w, d)).sum(-1)
  return (a * rows).sum(1) / (np.linalg.norm(a, axis=1)
                              * np.linalg.norm(rows, axis=1))


def _rate(mean_cos, d):
  return np.clip(1 - 10 / np.log2(d) * mean_cos, 0, 1)


def test_channel_attention_matches_numpy():
  x = RNG.standard_normal((3, 4, 4, 10))
  kernel = np.asarray([0.3, -0.2, 0.5])
  s = x.mean(axis=(1, 2))
  padded = np.pad(s, ((0, 0), (1, 1)))
  u = 0.3 * padded[:, :-2] - 0.2 * padded[:, 1:-1] + 0.5 * padded[:, 2:]
  want = np.exp(u) / np.exp(u).sum(1, keepdims=True)
  got = ops.channel_attention(jnp.asarray(x, jnp.float32),
                              jnp.asarray(kernel, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_rate_per_device_or_global_batch():
  """Without an axis name every device uses its own batch mean (reference
  DataParallel behaviour); with one, the mean over the global batch."""
  n = jax.device_count()
  mesh = jax.make_mesh((n,), ("data",))
  x = np.abs(RNG.standard_normal((2 * n, 3, 3, 16))) * np.linspace(
      0.1, 3, 2 * n)[:, None, None, None]
  x[:, :, :, ::2] *= -1.0                  # mixed-sign row sums: rates in (0, 1)
  a = jax.nn.softmax(jnp.asarray(RNG.standard_normal((2 * n, 16)),
                                 jnp.float32))
  cos = _cosines(x, np.asarray(a, np.float64))
  sharding = NamedSharding(mesh, P("data"))
  xs = jax.device_put(jnp.asarray(x, jnp.float32), sharding)
  az = jax.device_put(a, sharding)

  def per_device(axis_name):
    fn = jax.shard_map(
        lambda x, a: ops.adaptive_drop_rate(x, a, axis_name)[None],
        mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P("data"))
    return np.asarray(jax.jit(fn)(xs, az))

  local = per_device(None)
  np.testing.assert_allclose(local, _rate(cos.reshape(n, 2).mean(1), 16),
                             atol=1e-6)
  assert len(set(np.round(local, 6))) > 1
  np.testing.assert_allclose(per_device("data"),
                             np.full(n, _rate(cos.mean(), 16)), atol=1e-6)


def test_rate_has_no_gradient():
  x = jnp.asarray(RNG.standard_normal((2, 3, 3, 8)), jnp.float32)
  a = jnp.full((2, 8), 1 / 8)
  g = jax.grad(lambda x: ops.adaptive_drop_rate(x, a))(x)
  assert float(jnp.abs(g).max()) == 0.0


def test_dropout_with_traced_rate_under_jit():
  x = jnp.ones((4, 2, 2, 64))

  @jax.jit
  def drop(rate, key):
    return ops.channel_dropout(key, x, rate)

  for rate in (0.0, 0.5, 1.0):
    y = np.asarray(drop(jnp.float32(rate), jax.random.key(0)))
    assert np.all(np.isfinite(y))
    if rate == 0.0:
      np.testing.assert_array_equal(y, 1.0)
    elif rate == 1.0:
      np.testing.assert_array_equal(y, 0.0)
    else:
      assert set(np.unique(y)) == {0.0, 2.0}
  assert drop._cache_size() == 1          # one compilation for all rates


def test_rate_one_then_gcp_head_finite():
  """Everything dropped: covariance 0, isqrt 0, gradients finite."""
  x = jnp.asarray(RNG.standard_normal((2, 3, 3, 8)), jnp.float32)

  def head(x):
    y = ops.channel_dropout(jax.random.key(0), x, 1.0)
    return jnp.sum(ops.triu_vec(ops.isqrt(ops.covariance(y))))

  assert float(head(x)) == 0.0
  assert bool(jnp.all(jnp.isfinite(jax.grad(head)(x))))
