"""Hessian spectra: power iteration, Lanczos, Hutchinson and SLQ against
`numpy.linalg.eigh` of an explicit Hessian built by central finite
differences of gradients of an independently written float64 loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax import parallel
from gcp_jax.analysis import hessian, spectral
from tests.analysis import tiny


def _log_softmax_ce(logits, labels):
  """float64 per-example cross-entropy (gcp_jax's runs in float32)."""
  logp = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def _reference_hessian(variables, batches):
  """Explicit (114, 114) Hessian of the mean loss over all examples, from
  the MLP written out by hand; parameter order [head/*, hidden/*], and the
  index set of the head block."""
  p = variables["params"]
  leaves = [p["head"]["bias"], p["head"]["kernel"], p["hidden"]["bias"],
            p["hidden"]["kernel"]]
  shapes = [np.shape(x) for x in leaves]
  sizes = [int(np.prod(s)) for s in shapes]
  theta = np.concatenate([np.ravel(x) for x in leaves])
  x = np.concatenate([b["image"] for b in batches])
  y = np.concatenate([b["label"] for b in batches])

  def loss(theta):
    parts = jnp.split(theta, np.cumsum(sizes)[:-1])
    hb, hk, wb, wk = [q.reshape(s) for q, s in zip(parts, shapes)]
    hidden = jnp.tanh(x @ wk + wb[None])
    return jnp.mean(_log_softmax_ce(hidden @ hk + hb[None], y))

  grad = jax.jit(jax.grad(loss))
  h = 1e-5
  eye = np.eye(theta.size)
  cols = jax.vmap(lambda e: (grad(theta + h * e) - grad(theta - h * e)) /
                  (2 * h))(eye)
  mat = np.asarray(cols)
  return (mat + mat.T) / 2, np.arange(sizes[0] + sizes[1])


@pytest.fixture(scope="module")
def mlp_problem():
  with jax.enable_x64(True):
    model = tiny.MLP()
    rng = np.random.default_rng(0)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 6)), False)
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
    batches = [{"image": rng.standard_normal((8, 6)),
                "label": rng.integers(0, 4, 8)} for _ in range(3)]
    ref, head_idx = _reference_hessian(variables, batches)
    yield model, variables, batches, ref, head_idx


def _hess(mlp_problem, **kwargs):
  model, variables, batches, _, _ = mlp_problem
  return hessian.model_hessian(model, variables, batches, bn_mode="running",
                               loss_fn=_log_softmax_ce, **kwargs)


def test_power_iteration_and_lanczos_match_eigh(mlp_problem):
  ref = mlp_problem[3]
  eig = np.linalg.eigvalsh(ref)
  with jax.enable_x64(True):
    op = _hess(mlp_problem).operator
    assert op.dim == 114 and op.dtype == np.float64
    power = spectral.power_iteration(op, 3, jax.random.key(1),
                                     max_iters=3000, tol=1e-10)
    lanczos = spectral.lanczos_top(op, 3, 40, jax.random.key(2))
  by_magnitude = eig[np.argsort(-np.abs(eig))][:3]
  np.testing.assert_allclose(power.eigenvalues, by_magnitude, rtol=1e-3)
  np.testing.assert_allclose(lanczos.eigenvalues, eig[::-1][:3], rtol=1e-3)
  # the eigenvectors are eigenvectors of the explicit matrix
  for result in (power, lanczos):
    u, lam = result.eigenvectors, result.eigenvalues
    np.testing.assert_allclose(np.linalg.norm(u @ ref - lam[:, None] * u,
                                              axis=1), 0, atol=1e-3)
    assert np.all(result.residual_norms < 1e-3)


def test_block_hessian_is_the_diagonal_block(mlp_problem):
  ref, head_idx = mlp_problem[3], mlp_problem[4]
  with jax.enable_x64(True):
    hess = _hess(mlp_problem, block="head")
    top = spectral.lanczos_top(hess.operator, 2, 30, jax.random.key(3))
  assert hess.paths == ("head/bias", "head/kernel")
  assert hess.operator.dim == 44 and hess.num_samples == 24
  sub = np.linalg.eigvalsh(ref[np.ix_(head_idx, head_idx)])
  np.testing.assert_allclose(top.eigenvalues, sub[::-1][:2], rtol=1e-3)
  with pytest.raises(ValueError, match="top-level names: head, hidden"):
    hessian.select_block(mlp_problem[1]["params"], "layer4")


def test_hutchinson_trace_within_three_standard_errors(mlp_problem):
  exact = np.trace(mlp_problem[3])
  with jax.enable_x64(True):
    est = spectral.hutchinson_trace(_hess(mlp_problem).operator, 200,
                                    jax.random.key(4))
  assert est.num_probes == 200 and est.samples.shape == (200,)
  assert 0 < est.stderr < 0.2 * abs(exact)
  assert abs(est.mean - exact) < 3 * est.stderr


def test_slq_density_integrates_to_one_and_has_the_trace_mean(mlp_problem):
  ref = mlp_problem[3]
  with jax.enable_x64(True):
    dens = spectral.spectral_density(_hess(mlp_problem).operator, 16, 30,
                                     jax.random.key(5))
  np.testing.assert_allclose(dens.weights.sum(axis=1), 1.0, atol=1e-10)
  np.testing.assert_allclose(np.trapezoid(dens.density, dens.grid), 1.0,
                             atol=1e-4)
  np.testing.assert_allclose(np.trapezoid(dens.grid * dens.density,
                                          dens.grid), dens.mean, atol=1e-6)
  run_means = np.sum(dens.weights * dens.nodes, axis=1)
  stderr = run_means.std(ddof=1) / np.sqrt(len(run_means))
  assert abs(dens.mean - np.trace(ref) / ref.shape[0]) < 3 * stderr
  eig = np.linalg.eigvalsh(ref)
  assert dens.nodes.max() <= eig.max() + 1e-8
  assert dens.nodes.min() >= eig.min() - 1e-8


def test_lanczos_survives_an_invariant_subspace():
  """A spectrum with 4 distinct values: the Krylov space closes after 4
  steps; the restarted iteration still returns every eigenvalue."""
  rng = np.random.default_rng(1)
  values = np.array([5.0, 5.0, 3.0, 1.0, 1.0, 1.0, 0.0, 0.0])
  q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
  with jax.enable_x64(True):
    matrix = jnp.asarray(q @ np.diag(values) @ q.T)
    op = spectral.SymmetricOperator(lambda m, v: m @ v, matrix, 8,
                                    np.dtype(np.float64))
    result = spectral.lanczos_top(op, 8, 8, jax.random.key(0))
  np.testing.assert_allclose(result.eigenvalues, np.sort(values)[::-1],
                             atol=1e-10)
  assert np.all(np.isfinite(result.eigenvectors))


def test_hessian_vector_product_is_the_same_on_four_devices(mlp_problem):
  with jax.enable_x64(True):
    one = _hess(mlp_problem).operator
    four = _hess(mlp_problem, mesh=parallel.create_mesh(4, explicit=False)).operator
    v = jnp.asarray(np.random.default_rng(2).standard_normal(one.dim))
    np.testing.assert_allclose(np.asarray(four.matvec(v)),
                               np.asarray(one.matvec(v)), rtol=1e-12,
                               atol=1e-14)


def test_resnet_hessian_one_vs_four_devices():
  """Synchronised BN with batch statistics: the multi-batch HVP of the head
  block (reduction conv, its BN, FC) does not depend on the device count."""
  bn_mode = "batch"
  model, variables = tiny.tiny_resnet("resnet_tiny_isqrt")
  batches = tiny.image_batches(2, 8)
  products = []
  for n in (1, 4):
    hess = hessian.model_hessian(model, variables, batches, bn_mode=bn_mode,
                                 key=jax.random.key(0), block="head",
                                 mesh=parallel.create_mesh(n, explicit=False))
    v = jnp.asarray(np.random.default_rng(3).standard_normal(
        hess.operator.dim), jnp.float32)
    products.append(np.asarray(hess.operator.matvec(v)))
  scale = np.abs(products[0]).max()
  assert scale > 0
  np.testing.assert_allclose(products[1], products[0], atol=1e-4 * scale)
