"""Registry, ePN, B-CNN and svPN against numpy formulas from METHOD 4."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax import ops
from tests.ops import references as ref

RNG = np.random.default_rng(3)


def test_registry_names():
  assert set(ops.REPRESENTATIONS) == {"isqrt", "eig", "bcnn", "epn", "svpn",
                                      "none"}


def test_unknown_name_lists_valid_ones():
  with pytest.raises(ValueError, match="'sqrtm'.*bcnn, eig, epn, isqrt, none, "
                     "svpn"):
    ops.get_representation("sqrtm")


@pytest.mark.parametrize("name", sorted(ops.REPRESENTATIONS))
def test_output_shapes_and_dim(name):
  rep = ops.get_representation(name)
  z = rep(jnp.asarray(RNG.standard_normal((2, 5, 5, 12)), jnp.float32))
  assert z.shape == (2, rep.output_dim(12))
  assert bool(jnp.all(jnp.isfinite(z)))
  assert rep.output_dim(256) == (65536 if name == "bcnn" else 32896)


def test_isqrt_pipeline_equals_reference_composition():
  x = RNG.standard_normal((2, 6, 6, 10))
  want = ref.newton_schulz_sqrt(ref.covariance(x.reshape(2, 36, 10)), 3)
  rows, cols = np.triu_indices(10)
  got = ops.get_representation("isqrt")(jnp.asarray(x, jnp.float32),
                                        num_iters=3)
  np.testing.assert_allclose(got, want[:, rows, cols], rtol=1e-4, atol=1e-5)


def test_none_is_plain_covariance_triu():
  x = RNG.standard_normal((2, 6, 6, 10))
  rows, cols = np.triu_indices(10)
  want = ref.covariance(x.reshape(2, 36, 10))[:, rows, cols]
  got = ops.get_representation("none")(jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_bcnn_matches_formula():
  """P = X X^T / M uncentred, sign(P) sqrt(|P| + 1e-8), all d^2, l2."""
  x = RNG.standard_normal((2, 4, 4, 6))
  xm = x.reshape(2, 16, 6)
  p = np.einsum("bmc,bmd->bcd", xm, xm) / 16
  z = (np.sign(p) * np.sqrt(np.abs(p) + 1e-8)).reshape(2, 36)
  want = z / np.linalg.norm(z, axis=1, keepdims=True)
  got = ops.get_representation("bcnn")(jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_epn_alpha_and_norm():
  mat = RNG.standard_normal((3, 5, 5))
  z = np.sign(mat) * (np.abs(mat) + 1e-8) ** 0.3
  want = z / np.linalg.norm(z, axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(ops.epn(jnp.asarray(mat, jnp.float32), 0.3),
                             want, rtol=1e-5, atol=1e-6)


def _svpn_reference(mat, alpha, k):
  """Exact-SVD version of the svPN formula (converged power iteration)."""
  u, s, vt = np.linalg.svd(mat)
  top = sum(s[i] ** alpha * np.outer(u[:, i], vt[i]) for i in range(k))
  resid = mat - sum(s[i] * np.outer(u[:, i], vt[i]) for i in range(k))
  return top + resid / (s[k - 1] ** (1 - alpha) + 1e-5)


@pytest.mark.parametrize("k", [1, 2])
def test_svpn_converged_matches_svd_formula(k):
  q, _ = np.linalg.qr(RNG.standard_normal((8, 8)))
  s = np.asarray([5.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1, 0.05])
  mat = (q * s) @ q.T                         # well separated singular values
  with jax.enable_x64(True):
    got = np.asarray(ops.svpn(jnp.asarray(mat)[None], alpha=0.5, num_sv=k,
                              num_iters=60))[0]
  np.testing.assert_allclose(got, _svpn_reference(mat, 0.5, k), atol=1e-8)


def test_svpn_single_step_on_nonsymmetric_matrix():
  """One power step from the all-ones vector, written out by hand."""
  mat = RNG.standard_normal((6, 6))
  v = np.ones(6) / np.sqrt(6)
  u = mat @ v / np.linalg.norm(mat @ v)
  v = mat.T @ u / np.linalg.norm(mat.T @ u)
  w = mat @ v
  s = np.linalg.norm(w)
  u = w / s
  want = np.sqrt(s) * np.outer(u, v) + (mat - s * np.outer(u, v)) / (
      np.sqrt(s) + 1e-5)
  with jax.enable_x64(True):
    got = np.asarray(ops.svpn(jnp.asarray(mat)[None]))[0]
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ops.REPRESENTATIONS))
def test_zero_features_finite_value_and_gradient(name):
  rep = ops.get_representation(name)
  x = jnp.zeros((2, 7, 7, 16))
  assert bool(jnp.all(jnp.isfinite(rep(x))))
  g = jax.grad(lambda x: jnp.sum(rep(x) ** 2))(x)
  assert bool(jnp.all(jnp.isfinite(g)))


@pytest.mark.parametrize("name", sorted(ops.REPRESENTATIONS))
def test_gradients_match_finite_differences(name):
  rep = ops.get_representation(name)
  x = RNG.standard_normal((2, 3, 3, 4)) + 0.5
  w = RNG.standard_normal((2, rep.output_dim(4)))
  with jax.enable_x64(True):
    def loss(x):
      return jnp.sum(w * rep(x))
    grad = np.asarray(jax.grad(loss)(jnp.asarray(x)))
    h = 1e-6
    direction = RNG.standard_normal(x.shape)
    fd = (float(loss(jnp.asarray(x + h * direction)))
          - float(loss(jnp.asarray(x - h * direction)))) / (2 * h)
  np.testing.assert_allclose(np.sum(grad * direction), fd, rtol=1e-6)
