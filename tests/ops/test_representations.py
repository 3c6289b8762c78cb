"""Registry, ePN, B-CNN and svPN against numpy formulas (docs/method.md §4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax import ops
from tests.ops import references as ref

RNG = np.random.default_rng(3)


def test_registry_names():
  assert set(ops.REPRESENTATIONS) == {"isqrt", "eig", "bcnn", "epn", "svpn",
                                      "none", "cbp"}


def test_unknown_name_lists_valid_ones():
  with pytest.raises(ValueError, match="'sqrtm'.*bcnn, cbp, eig, epn, isqrt, "
                     "none, svpn"):
    ops.get_representation("sqrtm")


@pytest.mark.parametrize("name", sorted(ops.REPRESENTATIONS))
def test_output_shapes_and_dim(name):
  rep = ops.get_representation(name)
  z = rep(jnp.asarray(RNG.standard_normal((2, 5, 5, 12)), jnp.float32))
  assert z.shape == (2, rep.output_dim(12))
  assert bool(jnp.all(jnp.isfinite(z)))
  assert rep.output_dim(256) == {"bcnn": 65536, "cbp": 8192}.get(name, 32896)


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


def _dropcov_epn(x):
  """DropCov's transformer `ePN.forward`, float64 numpy: signed sqrt with
  eps 1e-8, then `F.normalize(x, dim=1)` (each column of a (B, n, m)
  matrix, norm clamped at 1e-12)."""
  x = np.sign(x) * np.sqrt(np.abs(x) + 1e-8)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def test_epn_is_dropcovs_column_normalised_epn():
  mat = RNG.standard_normal((3, 5, 5))
  with jax.enable_x64(True):
    got = np.asarray(ops.epn(jnp.asarray(mat)))
  np.testing.assert_allclose(got, _dropcov_epn(mat), rtol=1e-12)


def test_epn_frobenius_variant_and_alpha():
  mat = RNG.standard_normal((3, 5, 5))
  z = np.sign(mat) * (np.abs(mat) + 1e-8) ** 0.3
  want = z / np.linalg.norm(z, axis=(1, 2), keepdims=True)
  got = ops.epn(jnp.asarray(mat, jnp.float32), 0.3, normalize="frobenius")
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="normalize must be one of"):
    ops.epn(jnp.asarray(mat), normalize="rows")


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


def _dropcov_svpn(x, weight, alpha, iter_num, sv_num):
  """DropCov's transformer `svPN._singularValuePowerNorm(x, top=svNum)` and
  `_powerIteration`, float64 numpy, one matrix: the power steps start from
  `weight` each time, u and v are normalised with `F.normalize` (norm
  clamped at 1e-12), the singular value is u^T x v."""
  def normalize(a):
    return a / max(np.linalg.norm(a), 1e-12)
  us, ss, vs = [], [], []
  for _ in range(sv_num):
    v = weight
    for _ in range(iter_num):
      u = normalize(x @ v)
      v = normalize(x.T @ u)
    s = u @ x @ v
    us.append(u), ss.append(s), vs.append(v)
    x = x - s * np.outer(u, v)
  y = sum(ss[i] ** alpha * np.outer(us[i], vs[i]) for i in range(sv_num))
  return y + x / (ss[-1] ** (1 - alpha) + 1e-5)


@pytest.mark.parametrize("kind,iters,k", [
    ("nonsymmetric", 1, 1), ("nonsymmetric", 3, 2), ("covariance", 1, 1),
    ("covariance", 2, 3)])
@pytest.mark.parametrize("start", ["normal", "ones"])
def test_svpn_is_dropcovs_svpn(kind, iters, k, start):
  """Against a float64 transcription of the reference, from a learned-style
  N(0, 1) start vector and from ones (the configured single power step is
  where the old ||M v|| formulation differed by 3-12 %)."""
  x = RNG.standard_normal((6, 9))
  mat = x @ x.T / 9 if kind == "covariance" else RNG.standard_normal((6, 6))
  weight = RNG.standard_normal(6) if start == "normal" else np.ones(6)
  want = _dropcov_svpn(mat, weight, 0.5, iters, k)
  with jax.enable_x64(True):
    got = np.asarray(ops.svpn(jnp.asarray(mat)[None], num_iters=iters,
                              num_sv=k, start=jnp.asarray(weight)))[0]
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ops.REPRESENTATIONS))
def test_zero_features_finite_value_and_gradient(name):
  rep = ops.get_representation(name)
  x = jnp.zeros((2, 7, 7, 16))
  assert bool(jnp.all(jnp.isfinite(rep(x))))
  g = jax.grad(lambda x: jnp.sum(rep(x) ** 2))(x)
  assert bool(jnp.all(jnp.isfinite(g)))


# cbp at D = 6: every bin of the sketch of C = 4 channels is hit (an empty
# bin is FFT rounding whose sign the signed square root amplifies).
FD_OPTIONS = {"cbp": {"output_dim": 6}}


@pytest.mark.parametrize("name", sorted(ops.REPRESENTATIONS))
def test_gradients_match_finite_differences(name):
  rep = ops.get_representation(name)
  options = FD_OPTIONS.get(name, {})
  x = RNG.standard_normal((2, 3, 3, 4)) + 0.5
  w = RNG.standard_normal((2, rep.output_dim(4, **options)))
  with jax.enable_x64(True):
    def loss(x):
      return jnp.sum(w * rep(x, **options))
    grad = np.asarray(jax.grad(loss)(jnp.asarray(x)))
    h = 1e-6
    direction = RNG.standard_normal(x.shape)
    fd = (float(loss(jnp.asarray(x + h * direction)))
          - float(loss(jnp.asarray(x - h * direction)))) / (2 * h)
  np.testing.assert_allclose(np.sum(grad * direction), fd, rtol=1e-6)
