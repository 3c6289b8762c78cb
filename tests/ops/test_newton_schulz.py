"""isqrt: the reference function of docs/method.md §3.1, exact gradients,
no NaN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax import test_util

from gcp_jax import ops
from tests.ops import references as ref

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10])
@pytest.mark.parametrize("d,m", [(16, 40), (64, 196), (256, 49)])
def test_matches_float64_reference_iteration(n, d, m):
  cov = ref.random_spd(RNG, 3, d, m)
  want = ref.newton_schulz_sqrt(cov, n)
  got = np.asarray(ops.isqrt(jnp.asarray(cov, jnp.float32), n))
  assert got.dtype == np.float32
  scale = np.abs(want).max()
  np.testing.assert_allclose(got, want, atol=2e-5 * scale, rtol=0)


def test_float64_is_exact_reference():
  cov = ref.random_spd(RNG, 2, 32, 100)
  with jax.enable_x64(True):
    got = np.asarray(ops.isqrt(jnp.asarray(cov), 5))
  assert got.dtype == np.float64
  np.testing.assert_allclose(got, ref.newton_schulz_sqrt(cov, 5),
                             rtol=1e-12, atol=1e-14)


def test_converges_to_true_root():
  """N = 10 approaches scipy's sqrtm; N = 5 is only an approximation."""
  cov = ref.random_spd(RNG, 1, 64, 196)
  true = np.real(scipy.linalg.sqrtm(cov[0]))
  with jax.enable_x64(True):
    err = {n: np.linalg.norm(np.asarray(ops.isqrt(jnp.asarray(cov), n))[0]
                             - true) / np.linalg.norm(true)
           for n in (1, 3, 5, 10)}
  assert err[1] > err[3] > err[5] > err[10]
  assert err[10] < 1e-4
  assert err[5] > 1e-2      # the reference is not converged at N = 5


def test_n1_closed_form():
  """N = 1 is Y_1 = A (3I - A) / 2, then times sqrt(trace)
  (docs/method.md §3.1)."""
  cov = np.diag([3.0, 1.0])                       # trace 4, A = diag(.75, .25)
  a = np.diag([0.75, 0.25])
  want = 0.5 * a @ (3 * np.eye(2) - a) * 2.0
  got = ops.isqrt(jnp.asarray(cov[None], jnp.float32), 1)[0]
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_check_grads_float64(n):
  cov = ref.random_spd(RNG, 2, 6, 12)
  with jax.enable_x64(True):
    test_util.check_grads(jax.jit(lambda c: ops.isqrt(c, n)),
                          (jnp.asarray(cov),), order=2, modes=("fwd", "rev"),
                          eps=1e-6)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_gradient_nonsymmetric_cotangent_vs_central_differences(n):
  """<G, isqrt(Sigma)> with an upper-triangular G (what triu_vec sends back),
  differentiated w.r.t. the features, against float64 central differences."""
  feats = RNG.standard_normal((2, 10, 5))
  g = np.triu(RNG.standard_normal((2, 5, 5)))

  def loss_np(x):
    return np.sum(g * ref.newton_schulz_sqrt(ref.covariance(x), n))

  with jax.enable_x64(True):
    grad = np.asarray(jax.grad(
        lambda x: jnp.sum(g * ops.isqrt(ops.covariance(x), n)))(
            jnp.asarray(feats)))
  fd = ref.central_differences(loss_np, feats)
  np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def _features(kind: str) -> np.ndarray:
  x = RNG.standard_normal((2, 7, 7, 256)).astype(np.float32)  # M = 49 < C
  if kind == "zero":
    return np.zeros_like(x)
  if kind == "rank_deficient":
    return x
  if kind == "constant_channels":
    x[..., :200] = 3.0
    return x
  if kind == "duplicated_channels":
    x[..., 128:] = x[..., :128]
    return x
  if kind == "constant_map":
    return np.full_like(x, 5.0)        # every channel constant: covariance 0
  if kind == "tiny":
    return 1e-8 * x
  if kind == "huge":
    return 1e4 * x
  raise ValueError(kind)


DEGENERATE = ["zero", "rank_deficient", "constant_channels",
              "duplicated_channels", "constant_map", "tiny", "huge"]


@pytest.mark.parametrize("kind", DEGENERATE)
def test_degenerate_inputs_finite_output_and_gradient(kind):
  x = jnp.asarray(_features(kind))
  w = jnp.asarray(RNG.standard_normal((2, 256 * 257 // 2)), jnp.float32)

  def loss(x):
    return jnp.sum(w * ops.triu_vec(ops.isqrt(ops.covariance(x))))

  out = ops.isqrt(ops.covariance(x))
  grad_x = jax.grad(loss)(x)
  grad_cov = jax.grad(lambda c: jnp.sum(ops.isqrt(c)))(ops.covariance(x))
  assert bool(jnp.all(jnp.isfinite(out)))
  assert bool(jnp.all(jnp.isfinite(grad_x)))
  assert bool(jnp.all(jnp.isfinite(grad_cov)))


def test_zero_matrix_gives_zero():
  """The reference returns NaN (0/0) here; we return the limit, 0."""
  out = ops.isqrt(jnp.zeros((2, 8, 8)))
  np.testing.assert_array_equal(np.asarray(out), 0.0)


@pytest.mark.parametrize("kind", ["tiny", "huge", "rank_deficient"])
def test_scaled_inputs_still_match_reference(kind):
  """The trace guard does not change non-degenerate inputs, even 1e-8 ones."""
  x = _features(kind)[..., :64]
  cov64 = ref.covariance(x.reshape(2, 49, 64).astype(np.float64))
  want = ref.newton_schulz_sqrt(cov64, 5)
  got = np.asarray(ops.isqrt(ops.covariance(jnp.asarray(x))))
  np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max(),
                             rtol=0)


def test_bad_num_iters():
  with pytest.raises(ValueError, match="num_iters"):
    ops.isqrt(jnp.eye(3)[None], 0)
  with pytest.raises(ValueError, match="num_iters"):
    ops.isqrt(jnp.eye(3)[None], 2.0)


def test_non_square_input():
  with pytest.raises(ValueError, match=r"square matrices.*\(2, 3, 4\)"):
    ops.isqrt(jnp.ones((2, 3, 4)))
