"""matrix_power_eig: exact power, finite gradients at repeated/zero eigenvalues."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax import test_util

from gcp_jax import ops
from gcp_jax.ops import eig_power
from tests.ops import references as ref

RNG = np.random.default_rng(2)


def _spd(d: int, cond: float = 100.0) -> np.ndarray:
  q, _ = np.linalg.qr(RNG.standard_normal((d, d)))
  lam = np.geomspace(1.0, 1.0 / cond, d)
  return (q * lam) @ q.T


def test_sqrt_matches_scipy_sqrtm():
  cov = ref.random_spd(RNG, 3, 32, 200)
  got = ops.matrix_power_eig(jnp.asarray(cov, jnp.float32))
  for b in range(3):
    want = np.real(scipy.linalg.sqrtm(cov[b]))
    np.testing.assert_allclose(got[b], want, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("p", [0.5, 0.25, 1.0, -0.5])
def test_powers_match_scipy_fractional_power(p):
  cov = _spd(12)
  with jax.enable_x64(True):
    got = np.asarray(ops.matrix_power_eig(jnp.asarray(cov)[None], p))[0]
  np.testing.assert_allclose(got, np.real(scipy.linalg.fractional_matrix_power(
      cov, p)), rtol=1e-10, atol=1e-12)


def test_check_grads_float64():
  cov = np.stack([_spd(6), _spd(6, cond=5.0)])
  with jax.enable_x64(True):
    test_util.check_grads(jax.jit(lambda c: ops.matrix_power_eig(c, 0.5)),
                          (jnp.asarray(cov),), order=2, modes=("fwd", "rev"),
                          eps=1e-6)


def test_gradient_equals_sqrtm_frechet_derivative():
  """For S = Sigma^(1/2), dS solves the Sylvester equation S dS + dS S = dSigma."""
  cov = _spd(8)
  dcov = RNG.standard_normal((8, 8))
  dcov = dcov + dcov.T
  with jax.enable_x64(True):
    _, ds = jax.jvp(lambda c: ops.matrix_power_eig(c[None])[0],
                    (jnp.asarray(cov),), (jnp.asarray(dcov),))
  s = np.real(scipy.linalg.sqrtm(cov))
  want = scipy.linalg.solve_sylvester(s, s, dcov)
  np.testing.assert_allclose(np.asarray(ds), want, rtol=1e-9, atol=1e-11)


def test_repeated_eigenvalues_gradient_matches_finite_differences():
  """Identity-like matrix: all eigenvalues equal, eigenvectors arbitrary.

  The textbook eigh gradient is NaN here (1 / (lam_i - lam_j) = 1/0)."""
  cov = 2.0 * np.eye(5)
  g = RNG.standard_normal((5, 5))

  def loss_np(c):
    return np.sum(g * np.real(scipy.linalg.sqrtm(c)))

  with jax.enable_x64(True):
    grad = np.asarray(jax.grad(
        lambda c: jnp.sum(g * ops.matrix_power_eig(c[None])[0]))(
            jnp.asarray(cov)))
    naive = jax.grad(lambda c: jnp.sum(g * _naive_sqrt(c)))(jnp.asarray(cov))
  assert not np.all(np.isfinite(np.asarray(naive)))   # the guard matters
  fd = np.zeros_like(cov)
  h = 1e-6
  for i, j in np.ndindex(5, 5):
    e = np.zeros_like(cov)
    e[i, j] = e[j, i] = h    # symmetric perturbation
    fd[i, j] = (loss_np(cov + e) - loss_np(cov - e)) / (2 * h)
  # A symmetric perturbation of (i, j) and (j, i) moves both entries.
  sym = grad + grad.T - np.diag(np.diag(grad))
  np.testing.assert_allclose(sym, fd, rtol=1e-6, atol=1e-8)


def _naive_sqrt(c):
  lam, u = jnp.linalg.eigh(c)
  return (u * jnp.sqrt(lam)[None, :]) @ u.T


@pytest.mark.parametrize("kind", ["zero", "rank_deficient", "duplicated"])
def test_degenerate_inputs_finite(kind):
  x = RNG.standard_normal((2, 7, 7, 256)).astype(np.float32)
  if kind == "zero":
    x[:] = 0.0
  elif kind == "duplicated":
    x[..., 128:] = x[..., :128]
  w = jnp.asarray(RNG.standard_normal((2, 256 * 257 // 2)), jnp.float32)

  def loss(x):
    return jnp.sum(w * ops.triu_vec(ops.matrix_power_eig(ops.covariance(x))))

  assert bool(jnp.all(jnp.isfinite(ops.matrix_power_eig(
      ops.covariance(jnp.asarray(x))))))
  assert bool(jnp.all(jnp.isfinite(jax.grad(loss)(jnp.asarray(x)))))


def test_rank_deficient_gradient_matches_finite_differences():
  """Singular covariance (C = 6 from M = 4 positions): gradient of the clamped
  function against central differences, in float64."""
  feats = RNG.standard_normal((1, 4, 6))
  g = np.triu(RNG.standard_normal((1, 6, 6)))
  with jax.enable_x64(True):
    @jax.jit
    def loss(x):
      return jnp.sum(g * ops.matrix_power_eig(ops.covariance(x)))
    grad = np.asarray(jax.grad(loss)(jnp.asarray(feats)))
    fd = ref.central_differences(lambda x: loss(jnp.asarray(x)), feats)
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


def test_divided_differences_against_definition():
  """Both clamped, mixed, nearly equal (1e-12 apart) and well separated."""
  lam = np.asarray([0.0, 1e-30, 0.5, 0.5 + 1e-12, 2.0, 9.0])
  with jax.enable_x64(True):
    got = np.asarray(eig_power.power_divided_differences(
        jnp.asarray(lam), 0.5, jnp.asarray(1e-3)))
  g = np.sqrt(np.maximum(lam, 1e-3))
  for i, j in np.ndindex(6, 6):
    if abs(lam[i] - lam[j]) > 1e-6:
      want = (g[i] - g[j]) / (lam[i] - lam[j])
    else:
      mid = 0.5 * (lam[i] + lam[j])
      want = 0.5 / np.sqrt(mid) if mid > 1e-3 else 0.0
    assert abs(got[i, j] - want) <= 1e-9 * max(1.0, abs(want)), (i, j)
