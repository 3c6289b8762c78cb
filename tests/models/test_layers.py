"""`layers.PointwiseConv` against float64 numpy and against `nn.Conv`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from gcp_jax.models import layers

RNG = np.random.default_rng(11)


def _reference(x, kernel, stride):
  """float64 1 x 1 convolution: y[n, i, j] = x[n, s i, s j] @ W."""
  return np.einsum("nhwc,cd->nhwd", x[:, ::stride, ::stride, :],
                   kernel[0, 0])


@pytest.mark.parametrize("stride,size", [(1, 5), (2, 7), (2, 8), (3, 7)])
def test_pointwise_conv_matches_numpy_and_its_gradients(stride, size):
  x = RNG.standard_normal((2, size, size, 6))
  module = layers.PointwiseConv(4, stride, dtype=jnp.float32,
                                precision=jax.lax.Precision.HIGHEST)
  params = module.init(jax.random.key(0), jnp.asarray(x, jnp.float32))
  kernel = np.asarray(params["params"]["kernel"], np.float64)
  assert kernel.shape == (1, 1, 6, 4)

  expected = _reference(x, kernel, stride)
  out = np.asarray(module.apply(params, jnp.asarray(x, jnp.float32)))
  # PyTorch's output size for k = 1, padding 0: floor((H - 1) / s) + 1.
  assert out.shape == (2, (size - 1) // stride + 1,
                       (size - 1) // stride + 1, 4)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

  # Gradients of <y, G>: dW = sum over kept positions of x^T G; dx is G W^T
  # at the kept positions and zero elsewhere.
  cot = RNG.standard_normal(expected.shape)
  grad_w, grad_x = jax.grad(
      lambda p, xx: jnp.sum(module.apply(p, xx) * cot), argnums=(0, 1))(
          params, jnp.asarray(x, jnp.float32))
  kept = x[:, ::stride, ::stride, :]
  np.testing.assert_allclose(grad_w["params"]["kernel"][0, 0],
                             np.einsum("nhwc,nhwd->cd", kept, cot),
                             rtol=1e-5, atol=1e-4)
  expected_dx = np.zeros_like(x)
  expected_dx[:, ::stride, ::stride, :] = cot @ kernel[0, 0].T
  np.testing.assert_allclose(grad_x, expected_dx, rtol=1e-5, atol=1e-5)


def test_pointwise_conv_is_a_drop_in_for_nn_conv():
  """Same parameter tree, values (initialiser and RNG path) and outputs as
  the `nn.Conv` it replaces, so checkpoints and weight import are
  unaffected."""
  x = jnp.asarray(RNG.standard_normal((3, 9, 9, 8)), jnp.float32)
  ours = layers.PointwiseConv(16, 2, dtype=jnp.float32)
  flax_conv = nn.Conv(16, (1, 1), (2, 2), padding=((0, 0), (0, 0)),
                      use_bias=False, kernel_init=layers.conv_kernel_init)
  p_ours = ours.init(jax.random.key(3), x)
  p_flax = flax_conv.init(jax.random.key(3), x)
  assert jax.tree.structure(p_ours) == jax.tree.structure(p_flax)
  np.testing.assert_array_equal(p_ours["params"]["kernel"],
                                p_flax["params"]["kernel"])
  np.testing.assert_allclose(ours.apply(p_ours, x), flax_conv.apply(p_ours, x),
                             rtol=1e-5, atol=1e-5)


def test_pointwise_conv_computes_in_dtype_with_float32_params():
  x = jnp.asarray(RNG.standard_normal((2, 4, 4, 3)), jnp.float32)
  module = layers.conv(5, 1, 2, dtype=jnp.bfloat16, name="c")
  assert isinstance(module, layers.PointwiseConv)
  params = module.init(jax.random.key(0), x)
  assert params["params"]["kernel"].dtype == jnp.float32
  out = module.apply(params, x)
  assert out.dtype == jnp.bfloat16 and out.shape == (2, 2, 2, 5)
  np.testing.assert_allclose(
      np.asarray(out, np.float32),
      _reference(np.asarray(x, np.float64),
                 np.asarray(params["params"]["kernel"], np.float64), 2),
      rtol=0.05, atol=0.05)
