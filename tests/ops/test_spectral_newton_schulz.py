"""isqrt(method="eigh"): the Newton-Schulz polynomial on eigenvalues.

References are the float64 numpy matrix iteration of docs/method.md §3.1
(`references.newton_schulz_sqrt`), numpy divided differences and central
finite differences, none of them the code under test.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util

from gcp_jax import ops
from gcp_jax.ops import spectral_newton_schulz as nse
from tests.ops import references as ref

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("n", [1, 2, 5, 10])
def test_scalar_polynomial_is_the_matrix_iteration(n):
  """p_N(lam) = lam z_N(lam) equals the diagonal of the matrix iteration on
  A = diag(lam, 1 - lam) (trace 1, so the reference's trace scaling is 1)."""
  lam = np.linspace(0.0, 1.0, 41)
  want = np.stack([np.diag(ref.newton_schulz_sqrt(
      np.diag([v, 1.0 - v])[None], n)[0]) for v in lam])
  with jax.enable_x64(True):
    z = np.asarray(nse.inverse_root_iterate(jnp.asarray(lam), n))
    z_other = np.asarray(nse.inverse_root_iterate(jnp.asarray(1.0 - lam), n))
  np.testing.assert_allclose(lam * z, want[:, 0], rtol=1e-13, atol=1e-15)
  np.testing.assert_allclose((1.0 - lam) * z_other, want[:, 1], rtol=1e-13,
                             atol=1e-15)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_divided_differences(n):
  """Off the diagonal (z(a) - z(b)) / (a - b) for separated points; on it
  the central-difference derivative; finite and continuous at a = b and 0."""
  lam = np.array([0.0, 1e-9, 0.05, 0.3, 0.3 + 1e-12, 0.7, 1.0])
  with jax.enable_x64(True):
    dd = np.asarray(nse.inverse_root_divided_differences(jnp.asarray(lam), n))
    z = lambda v: np.asarray(nse.inverse_root_iterate(jnp.asarray(v), n))
    h = 1e-6
    deriv = (z(lam + h) - z(lam - h)) / (2 * h)
    zl = z(lam)
  assert np.all(np.isfinite(dd))
  np.testing.assert_allclose(dd, dd.T, rtol=1e-12)
  np.testing.assert_allclose(np.diag(dd), deriv, rtol=1e-7, atol=1e-9)
  for i in range(len(lam)):
    for j in range(len(lam)):
      if abs(lam[i] - lam[j]) > 1e-3:
        np.testing.assert_allclose(
            dd[i, j], (zl[i] - zl[j]) / (lam[i] - lam[j]), rtol=1e-10)
      else:   # (near-)coincident points: the derivative at either
        np.testing.assert_allclose(dd[i, j], deriv[i], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("n", [1, 5, 10])
@pytest.mark.parametrize("d,m", [(64, 196), (48, 20)])
def test_matches_float64_reference_iteration(n, d, m):
  """float32 isqrt(method="eigh") and pooled_isqrt on features (Gram path
  when m < d) against the float64 matrix iteration, at the tolerance the
  matrix iteration's own float32 test uses."""
  x = RNG.standard_normal((3, m, d))
  want = ref.newton_schulz_sqrt(ref.covariance(x), n)
  scale = np.abs(want).max()
  x32 = jnp.asarray(x, jnp.float32)
  from_cov = ops.isqrt(ops.covariance(x32), n, method="eigh")
  pooled = ops.pooled_isqrt(x32, n, method="eigh")
  for got in (from_cov, pooled):
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5 * scale,
                               rtol=0)


@pytest.mark.parametrize("m", [12, 40])
def test_float64_equals_reference(m):
  x = RNG.standard_normal((2, m, 24))
  want = ref.newton_schulz_sqrt(ref.covariance(x), 5)
  with jax.enable_x64(True):
    pooled = np.asarray(ops.pooled_isqrt(jnp.asarray(x), 5, method="eigh"))
    from_cov = np.asarray(ops.isqrt(jnp.asarray(ref.covariance(x)), 5,
                                    method="eigh"))
  assert pooled.dtype == np.float64
  np.testing.assert_allclose(pooled, want, rtol=1e-11, atol=1e-13)
  np.testing.assert_allclose(from_cov, want, rtol=1e-11, atol=1e-13)


def test_check_grads_float64_gram_path():
  """Forward, reverse and second order through pooled_isqrt with m = 5 < C
  = 8 (distinct eigenvalues apart from the centring zero)."""
  x = RNG.standard_normal((2, 5, 8))
  with jax.enable_x64(True):
    test_util.check_grads(
        jax.jit(lambda x: ops.pooled_isqrt(x, 5, method="eigh")),
        (jnp.asarray(x),),
        order=2, modes=("fwd", "rev"), eps=1e-6)


def test_check_grads_float64_covariance():
  """The C x C path (what pooled_isqrt uses for M >= C), full rank."""
  cov = ref.random_spd(RNG, 2, 6, 12)
  with jax.enable_x64(True):
    test_util.check_grads(jax.jit(lambda c: ops.isqrt(c, 5, method="eigh")),
                          (jnp.asarray(cov),), order=2, modes=("fwd", "rev"),
                          eps=1e-6)


@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("m", [4, 10])
def test_feature_gradient_vs_central_differences(n, m):
  """<G, isqrt(Sigma(x))> with an upper-triangular G (what triu_vec sends
  back) against float64 central differences of the reference."""
  feats = RNG.standard_normal((2, m, 6))
  g = np.triu(RNG.standard_normal((2, 6, 6)))

  def loss_np(x):
    return np.sum(g * ref.newton_schulz_sqrt(ref.covariance(x), n))

  with jax.enable_x64(True):
    grad = np.asarray(jax.grad(
        lambda x: jnp.sum(g * ops.pooled_isqrt(x, n, method="eigh")))(
            jnp.asarray(feats)))
  fd = ref.central_differences(loss_np, feats)
  np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_covariance_gradient_is_that_of_the_symmetric_part():
  """The eigh path reads (A + A^T) / 2, so its gradient w.r.t. the matrix is
  the symmetric part of the matrix iteration's (equal for symmetric G)."""
  cov = ref.random_spd(RNG, 2, 6, 12)
  g = RNG.standard_normal((2, 6, 6))
  with jax.enable_x64(True):
    grad = lambda method, w: np.asarray(jax.grad(
        lambda c: jnp.sum(w * ops.isqrt(c, 5, method=method)))(
            jnp.asarray(cov)))
    ns, eig = grad("newton_schulz", g), grad("eigh", g)
    sym = 0.5 * (g + np.swapaxes(g, 1, 2))
    ns_sym, eig_sym = grad("newton_schulz", sym), grad("eigh", sym)
  np.testing.assert_allclose(eig, 0.5 * (ns + np.swapaxes(ns, 1, 2)),
                             rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(eig_sym, ns_sym, rtol=1e-9, atol=1e-12)


def _degenerate(kind: str, m_side: int) -> np.ndarray:
  x = RNG.standard_normal((2, m_side, m_side, 64)).astype(np.float32)
  if kind == "zero":
    return np.zeros_like(x)
  if kind == "constant_channels":
    x[..., :50] = 3.0
  elif kind == "duplicated_channels":
    x[..., 32:] = x[..., :32]
  elif kind == "duplicated_positions":     # repeated zero Gram eigenvalues
    x[:, :, : m_side // 2] = x[:, :1, :1]
  elif kind == "constant_map":
    return np.full_like(x, 5.0)
  elif kind == "tiny":
    return 1e-8 * x
  elif kind == "huge":
    return 1e4 * x
  return x


# M = 16 < C = 64: the Gram path; M = 100: the C x C path.
@pytest.mark.parametrize("kind,side", [
    (kind, 4) for kind in ("zero", "constant_channels", "duplicated_channels",
                           "duplicated_positions", "constant_map", "tiny",
                           "huge")] + [
    (kind, 10) for kind in ("zero", "constant_channels", "tiny", "huge")])
def test_degenerate_inputs_finite_and_equal_to_matrix_iteration(kind, side):
  """Outputs and feature gradients finite, and equal to the matrix
  iteration's (float32) wherever that one is accurate."""
  x = jnp.asarray(_degenerate(kind, side))
  w = jnp.asarray(RNG.standard_normal((2, 64 * 65 // 2)), jnp.float32)

  def head(method):
    def loss(x):
      return jnp.sum(w * ops.triu_vec(ops.pooled_isqrt(x, method=method)))
    return (ops.pooled_isqrt(x, method=method), jax.grad(loss)(x))

  (out, grad), (out_ns, grad_ns) = head("eigh"), head("newton_schulz")
  assert bool(jnp.all(jnp.isfinite(out)))
  assert bool(jnp.all(jnp.isfinite(grad)))
  np.testing.assert_allclose(out, out_ns, rtol=0,
                             atol=2e-5 * float(jnp.abs(out_ns).max()) + 1e-30)
  np.testing.assert_allclose(grad, grad_ns, rtol=0,
                             atol=1e-4 * float(jnp.abs(grad_ns).max()) + 1e-30)


def test_zero_features_give_zero():
  out = ops.pooled_isqrt(jnp.zeros((2, 3, 3, 16)), method="eigh")
  np.testing.assert_array_equal(np.asarray(out), 0.0)


def test_representation_method_option():
  """rep(x, method="eigh") is the same triu vector as the default method."""
  x = jnp.asarray(np.maximum(RNG.standard_normal((2, 7, 7, 96)), 0.0),
                  jnp.float32)
  rep = ops.get_representation("isqrt")
  want = ref.newton_schulz_sqrt(ref.covariance(
      np.asarray(x, np.float64).reshape(2, 49, 96)), 5)
  rows, cols = np.triu_indices(96)
  got = rep(x, num_iters=5, method="eigh")
  np.testing.assert_allclose(got, want[:, rows, cols],
                             atol=2e-5 * np.abs(want).max(), rtol=0)
  np.testing.assert_allclose(rep.normalize(ops.covariance(x), method="eigh"),
                             want, atol=2e-5 * np.abs(want).max(), rtol=0)


def test_bad_method_lists_valid_ones():
  for call in (lambda: ops.isqrt(jnp.eye(3)[None], method="qr"),
               lambda: ops.pooled_isqrt(jnp.ones((1, 2, 2, 3)), method="qr")):
    with pytest.raises(ValueError, match="'qr'.*newton_schulz, eigh"):
      call()
