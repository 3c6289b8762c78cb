"""triu_vec order: row-major upper triangle, as the PyTorch Triuvec."""

import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax import ops


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
  """32896 for d = 256, 12880 for d = 160, 8256 for d = 128 (METHOD 1.4)."""
  for d, dim in [(256, 32896), (160, 12880), (128, 8256)]:
    assert ops.triu_vec(jnp.zeros((1, d, d))).shape == (1, dim)


def test_flatten_row_major():
  mat = jnp.arange(9.0).reshape(1, 3, 3)
  np.testing.assert_array_equal(ops.flatten(mat)[0], np.arange(9.0))
