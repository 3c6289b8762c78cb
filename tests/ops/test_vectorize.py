"""triu_vec order: row-major upper triangle, as the PyTorch Triuvec."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax import ops
from gcp_jax.ops.vectorize import triu_flat_indices


def test_4x4_order_by_hand():
  mat = jnp.arange(16.0).reshape(1, 4, 4)   # entry (i, j) = 4 i + j
  # (0,0) (0,1) (0,2) (0,3) (1,1) (1,2) (1,3) (2,2) (2,3) (3,3)
  want = [0, 1, 2, 3, 5, 6, 7, 10, 11, 15]
  np.testing.assert_array_equal(ops.triu_vec(mat)[0], want)


@pytest.mark.parametrize("n", [1, 5, 128, 256])
def test_matches_numpy_triu_indices(n):
  mat = np.random.default_rng(n).standard_normal((2, n, n))
  rows, cols = np.triu_indices(n)
  got = ops.triu_vec(jnp.asarray(mat))
  assert got.shape == (2, n * (n + 1) // 2)
  np.testing.assert_array_equal(got, mat[:, rows, cols].astype(np.float32))


def test_paper_dimensions():
  """32896 for d = 256, 12880 for d = 160, 8256 for d = 128
  (docs/method.md §7.2)."""
  for d, dim in [(256, 32896), (160, 12880), (128, 8256)]:
    assert ops.triu_vec(jnp.zeros((1, d, d))).shape == (1, dim)


def test_flatten_row_major():
  mat = jnp.arange(9.0).reshape(1, 3, 3)
  np.testing.assert_array_equal(ops.flatten(mat)[0], np.arange(9.0))


def _scatter_triu_vec(mat):
  """The plain gather, differentiated by autodiff (a scatter-add)."""
  n = mat.shape[-1]
  return mat.reshape(*mat.shape[:-2], n * n)[..., triu_flat_indices(n)]


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (2, 3, 7)])
def test_gradient_is_the_cotangent_on_the_upper_triangle(shape):
  """The gather backward equals the autodiff scatter: g on i <= j, 0 below."""
  n = shape[-1]
  rng = np.random.default_rng(n)
  mat = jnp.asarray(rng.standard_normal((*shape[:-1], n, n)), jnp.float32)
  g = jnp.asarray(rng.standard_normal((*shape[:-1], n * (n + 1) // 2)),
                  jnp.float32)
  got = jax.vjp(ops.triu_vec, mat)[1](g)[0]
  want = jax.vjp(_scatter_triu_vec, mat)[1](g)[0]
  np.testing.assert_array_equal(got, want)
  rows, cols = np.triu_indices(n)
  expected = np.zeros(mat.shape, np.float32)
  expected[..., rows, cols] = g
  np.testing.assert_array_equal(got, expected)


def test_backward_has_no_scatter_and_forward_over_reverse_works():
  mat = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 6)),
                    jnp.float32)
  loss = lambda m: jnp.sum(jnp.sin(ops.triu_vec(m)))   # noqa: E731
  hlo = jax.jit(jax.grad(loss)).lower(mat).as_text()
  assert "gather" in hlo and "scatter" not in hlo
  # Hessian-vector products (jvp of grad) go through the custom_vjp.
  v = jnp.ones_like(mat)
  hvp = jax.jvp(jax.grad(loss), (mat,), (v,))[1]
  want = jax.jvp(jax.grad(lambda m: jnp.sum(jnp.sin(_scatter_triu_vec(m)))),
                 (mat,), (v,))[1]
  np.testing.assert_allclose(hvp, want, rtol=1e-6, atol=1e-6)
