"""`layers.PointwiseConv` and `layers.BatchNorm` against float64 numpy, finite
differences and the Flax modules they replace."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P
from jax.test_util import check_grads

from gcp_jax import backend
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


@pytest.mark.parametrize("platform", [backend.CPU, backend.GPU])
def test_1x1_conv_computes_in_dtype_with_float32_params(platform):
  """Both backends' 1 x 1 convolutions: bf16 compute, float32 kernel."""
  x = jnp.asarray(RNG.standard_normal((2, 4, 4, 3)), jnp.float32)
  with backend.assume(platform):
    module = layers.conv(5, 1, 2, dtype=jnp.bfloat16, name="c")
  assert isinstance(module, layers.PointwiseConv if platform == backend.CPU
                    else nn.Conv)
  params = module.init(jax.random.key(0), x)
  assert params["params"]["kernel"].dtype == jnp.float32
  out = module.apply(params, x)
  assert out.dtype == jnp.bfloat16 and out.shape == (2, 2, 2, 5)
  np.testing.assert_allclose(
      np.asarray(out, np.float32),
      _reference(np.asarray(x, np.float64),
                 np.asarray(params["params"]["kernel"], np.float64), 2),
      rtol=0.05, atol=0.05)


# ------------------------------------------------------------- BatchNorm


def _bn_reference(x, gamma, beta, eps=1e-5):
  """float64 training-mode BatchNorm over all axes but the last: output,
  batch mean and biased variance."""
  axes = tuple(range(x.ndim - 1))
  mu, var = x.mean(axes), x.var(axes)
  return (x - mu) / np.sqrt(var + eps) * gamma + beta, mu, var


def _bn_reference_vjp(x, gamma, dy, eps=1e-5):
  """The textbook BatchNorm backward (Ioffe & Szegedy 2015), float64:
  dx = gamma / (M sigma) (M dy - sum dy - xhat sum(dy xhat)),
  dgamma = sum(dy xhat), dbeta = sum dy, sums over the M positions."""
  axes = tuple(range(x.ndim - 1))
  m = x.size // x.shape[-1]
  sigma = np.sqrt(x.var(axes) + eps)
  xhat = (x - x.mean(axes)) / sigma
  s_dy, s_dy_xhat = dy.sum(axes), (dy * xhat).sum(axes)
  dx = gamma / (m * sigma) * (m * dy - s_dy - xhat * s_dy_xhat)
  return dx, s_dy_xhat, s_dy


def _bn_variables(gamma, beta, mean, var, dtype=jnp.float32):
  return {"params": {"scale": jnp.asarray(gamma, dtype),
                     "bias": jnp.asarray(beta, dtype)},
          "batch_stats": {"mean": jnp.asarray(mean, dtype),
                          "var": jnp.asarray(var, dtype)}}


def test_batch_norm_train_and_eval_match_float64_reference():
  x = RNG.standard_normal((4, 5, 5, 6)) * 3.0 + 1.5
  gamma, beta = RNG.uniform(0.5, 2.0, 6), RNG.standard_normal(6)
  old_mean, old_var = RNG.standard_normal(6), RNG.uniform(0.5, 2.0, 6)
  variables = _bn_variables(gamma, beta, old_mean, old_var)
  train = layers.BatchNorm(use_running_average=False)
  out, updates = train.apply(variables, jnp.asarray(x, jnp.float32),
                             mutable=["batch_stats"])
  expected, mu, var = _bn_reference(x, gamma, beta)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  # PyTorch momentum 0.1: r <- 0.9 r + 0.1 statistic (biased variance).
  np.testing.assert_allclose(updates["batch_stats"]["mean"],
                             0.9 * old_mean + 0.1 * mu, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(updates["batch_stats"]["var"],
                             0.9 * old_var + 0.1 * var, rtol=1e-5, atol=1e-6)

  evaluate = layers.BatchNorm(use_running_average=True)
  out = evaluate.apply(variables, jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(
      out, (x - old_mean) / np.sqrt(old_var + 1e-5) * gamma + beta,
      rtol=1e-5, atol=1e-5)

  # init leaves the running statistics at their initial values.
  init = train.init(jax.random.key(0), jnp.asarray(x, jnp.float32))
  np.testing.assert_array_equal(init["batch_stats"]["mean"], np.zeros(6))
  np.testing.assert_array_equal(init["batch_stats"]["var"], np.ones(6))
  np.testing.assert_array_equal(init["params"]["scale"], np.ones(6))


def test_batch_norm_gradients_match_the_textbook_backward():
  x = RNG.standard_normal((3, 4, 4, 5)) * 2.0 - 1.0
  gamma, beta = RNG.uniform(0.5, 2.0, 5), RNG.standard_normal(5)
  dy = RNG.standard_normal(x.shape)
  module = layers.BatchNorm(use_running_average=False)

  def loss(xx, g, b):
    out, _ = module.apply(_bn_variables(g, b, np.zeros(5), np.ones(5)), xx,
                          mutable=["batch_stats"])
    return jnp.sum(out * dy)

  got = jax.grad(loss, argnums=(0, 1, 2))(
      jnp.asarray(x, jnp.float32), jnp.asarray(gamma, jnp.float32),
      jnp.asarray(beta, jnp.float32))
  for g, e in zip(got, _bn_reference_vjp(x, gamma, dy)):
    np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def test_batch_norm_float64_derivatives_to_second_order():
  """Central finite differences in float64, forward and reverse mode to
  second order: forward-over-reverse is how the Hessian analyses
  (`analysis.hessian`, BN mode 'batch') differentiate it."""
  with jax.enable_x64(True):
    x = jnp.asarray(RNG.standard_normal((2, 3, 3, 4)) + 0.5)
    gamma = jnp.asarray(RNG.uniform(0.5, 2.0, 4))
    beta = jnp.asarray(RNG.standard_normal(4))
    weights = jnp.asarray(RNG.standard_normal(x.shape))
    module = layers.BatchNorm(use_running_average=False, dtype=jnp.float64)

    def f(xx, g, b):
      out, _ = module.apply(
          _bn_variables(g, b, np.zeros(4), np.ones(4), jnp.float64), xx,
          mutable=["batch_stats"])
      assert out.dtype == jnp.float64
      return jnp.sum(jnp.tanh(out) * weights)

    check_grads(jax.jit(f), (x, gamma, beta), order=2, modes=("fwd", "rev"),
                eps=1e-4, atol=1e-6, rtol=1e-6)


def test_batch_norm_is_a_drop_in_for_flax_batch_norm():
  """Same variable tree and initial values as the `nn.BatchNorm` it
  replaces (checkpoints and weight import unaffected), the same outputs and
  running statistics, and bf16 output from float32 statistics."""
  x = jnp.asarray(RNG.standard_normal((8, 3, 3, 7)) * 2.0 + 0.5, jnp.float32)
  flax_bn = lambda train, dtype: nn.BatchNorm(  # noqa: E731
      use_running_average=not train, momentum=0.9, epsilon=1e-5,
      dtype=dtype, param_dtype=jnp.float32)
  ours = lambda train, dtype: layers.BatchNorm(  # noqa: E731
      use_running_average=not train, dtype=dtype)
  v_ours = ours(True, jnp.float32).init(jax.random.key(0), x)
  v_flax = flax_bn(True, jnp.float32).init(jax.random.key(0), x)
  assert jax.tree.structure(v_ours) == jax.tree.structure(v_flax)
  for a, b in zip(jax.tree.leaves(v_ours), jax.tree.leaves(v_flax)):
    np.testing.assert_array_equal(a, b)

  variables = _bn_variables(RNG.uniform(0.5, 2, 7), RNG.standard_normal(7),
                            RNG.standard_normal(7), RNG.uniform(0.5, 2, 7))
  for dtype in (jnp.float32, jnp.bfloat16):
    out_o, upd_o = ours(True, dtype).apply(variables, x,
                                           mutable=["batch_stats"])
    out_f, upd_f = flax_bn(True, dtype).apply(variables, x,
                                              mutable=["batch_stats"])
    assert out_o.dtype == dtype
    tol = 1e-5 if dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(np.asarray(out_o, np.float32),
                               np.asarray(out_f, np.float32),
                               rtol=tol, atol=tol)
    for a, b in zip(jax.tree.leaves(upd_o), jax.tree.leaves(upd_f)):
      assert a.dtype == jnp.float32
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(ours(False, dtype).apply(variables, x), np.float32),
        np.asarray(flax_bn(False, dtype).apply(variables, x), np.float32),
        rtol=tol, atol=tol)


def test_synchronised_batch_norm_uses_the_global_batch():
  """Over 4 devices with `axis_name`, each device's slice is normalised
  with the statistics of the whole batch, and the running statistics are
  the global batch's on every device."""
  mesh = jax.make_mesh((4,), ("data",))
  x = RNG.standard_normal((8, 2, 2, 3)) * np.array([1.0, 3.0, 0.5]) + 2.0
  gamma, beta = RNG.uniform(0.5, 2, 3), RNG.standard_normal(3)
  variables = _bn_variables(gamma, beta, np.zeros(3), np.ones(3))
  module = layers.BatchNorm(use_running_average=False, axis_name="data")

  def per_device(v, xx):
    out, upd = module.apply(v, xx, mutable=["batch_stats"])
    return out, upd["batch_stats"]["mean"][None], upd["batch_stats"]["var"][
        None]

  out, means, variances = jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P("data")),
      out_specs=(P("data"), P("data"), P("data"))))(
          variables, jax.device_put(jnp.asarray(x, jnp.float32),
                                    NamedSharding(mesh, P("data"))))
  expected, mu, var = _bn_reference(x, gamma, beta)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(means, np.tile(0.1 * mu, (4, 1)), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(variances, np.tile(0.9 + 0.1 * var, (4, 1)),
                             rtol=1e-5, atol=1e-6)
