"""Filter-normalised directions on a tiny GCP ResNet's variables."""

import jax
import numpy as np
import pytest

from gcp_jax.analysis import directions
from tests.analysis import tiny


@pytest.fixture(scope="module")
def variables():
  return tiny.tiny_resnet("resnet_tiny_isqrt")[1]


def _leaves(tree):
  return [(jax.tree_util.keystr(p), np.asarray(x))
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _filter_norms(x):
  """Norm of every output filter (last axis) of a kernel."""
  return np.sqrt(np.sum(np.square(x.reshape(-1, x.shape[-1])), axis=0))


def test_filters_have_the_weight_norms_and_1d_leaves_are_zero(variables):
  d = directions.random_direction(jax.random.key(0), variables)
  kernels = 0
  for (name, dx), (_, wx) in zip(_leaves(d["params"]),
                                 _leaves(variables["params"])):
    if wx.ndim >= 2:
      kernels += 1
      np.testing.assert_allclose(_filter_norms(dx), _filter_norms(wx),
                                 rtol=1e-5, err_msg=name)
      assert not np.allclose(dx, wx)
    else:
      assert np.all(dx == 0), name
  assert kernels >= 10      # stem, 4 blocks x 2 convs, downsamples, head
  for _, dx in _leaves(d["batch_stats"]):
    assert np.all(dx == 0)


def test_one_d_filter_and_copy_options_and_batch_stats(variables):
  d = directions.random_direction(jax.random.key(1), variables,
                                  one_d="filter", include_batch_stats=True)
  c = directions.random_direction(jax.random.key(1), variables,
                                  one_d="copy")
  for collection in ("params", "batch_stats"):
    for (name, dx), (_, wx) in zip(_leaves(d[collection]),
                                   _leaves(variables[collection])):
      if wx.ndim <= 1:
        np.testing.assert_allclose(np.linalg.norm(dx), np.linalg.norm(wx),
                                   rtol=1e-5, err_msg=name)
  for (_, cx), (_, wx) in zip(_leaves(c["params"]),
                              _leaves(variables["params"])):
    if wx.ndim <= 1:
      np.testing.assert_array_equal(cx, wx)
  with pytest.raises(ValueError, match="one_d must be one of"):
    directions.random_direction(jax.random.key(1), variables, one_d="bias")


def test_same_key_same_direction_and_combine(variables):
  d1 = directions.random_direction(jax.random.key(2), variables)
  d2 = directions.random_direction(jax.random.key(2), variables)
  for (_, a), (_, b) in zip(_leaves(d1), _leaves(d2)):
    np.testing.assert_array_equal(a, b)
  other = tiny.tiny_resnet("resnet_tiny_isqrt", seed=1)[1]
  diff = directions.difference(variables, other)
  combine = jax.jit(directions.combine)
  end = combine(variables, [diff], [1.0])
  for (_, a), (_, b) in zip(_leaves(end), _leaves(other)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  point = combine(variables, [d1, diff], [0.5, -2.0])
  for (_, p), (_, w), (_, x), (_, y) in zip(
      _leaves(point), _leaves(variables), _leaves(d1), _leaves(diff)):
    np.testing.assert_allclose(p, w + 0.5 * x - 2.0 * y, rtol=1e-5,
                               atol=1e-6)
