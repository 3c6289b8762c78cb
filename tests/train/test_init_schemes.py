"""init_scheme="mindspore": the TPAMI seed's `init_weight`, checked against
its formulas on a real model's params."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from gcp_jax.models import create_model
from gcp_jax.train.init_schemes import reinitialize


@pytest.fixture(scope="module")
def params():
  model = create_model("resnet18_isqrt_d128", 1001)
  return model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                    False)["params"]


def test_module_scheme_keeps_the_params(params):
  assert reinitialize(params, "module", jax.random.key(1)) is params


def test_mindspore_scheme_draws_as_the_seed(params):
  new = traverse_util.flatten_dict(
      reinitialize(params, "mindspore", jax.random.key(1)), sep="/")
  old = traverse_util.flatten_dict(params, sep="/")
  # layer2's 3x3 conv, 64 -> 128 channels: XavierUniform bound
  # sqrt(6 / (9 * 64 + 9 * 128)) = 0.058926.
  conv = np.asarray(new["layer2/block0/conv1/kernel"])
  assert conv.shape == (3, 3, 64, 128)
  bound = np.sqrt(6.0 / (9 * 64 + 9 * 128))
  assert np.abs(conv).max() <= bound and np.abs(conv).max() > 0.99 * bound
  np.testing.assert_allclose(conv.std(), bound / np.sqrt(3), rtol=0.02)
  # The 1x1 reduction conv 512 -> 128: bound sqrt(6 / 640).
  reduce = np.asarray(new["head/reduce/conv_reduce/kernel"])
  np.testing.assert_allclose(np.abs(reduce).max(), np.sqrt(6 / 640),
                             rtol=0.01)
  # FC 8256 -> 1001: 0.01 N(0, 1) truncated at 2 sigma (std 0.8796 x 0.01),
  # bias 0.
  fc = np.asarray(new["head/fc/kernel"])
  assert fc.shape == (8256, 1001) and np.abs(fc).max() <= 0.02
  np.testing.assert_allclose(fc.std(), 0.01 * 0.87962566, rtol=0.01)
  assert not np.asarray(new["head/fc/bias"]).any()
  for path in ("stem/bn1/scale", "layer1/block0/bn2/bias",
               "head/reduce/bn_reduce/scale"):
    np.testing.assert_array_equal(new[path], old[path])
  assert jax.tree.structure(new) == jax.tree.structure(old)


def test_unknown_scheme_names_the_valid_ones(params):
  with pytest.raises(ValueError, match="'xavier'.*module, mindspore"):
    reinitialize(params, "xavier", jax.random.key(0))
