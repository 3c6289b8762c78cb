"""ResNet and head behaviour: strides, DropCov semantics, dtype policy,
initialisation, no retracing."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax import ops
from gcp_jax.models import create_model
from tests.ops import references as ref

RNG = np.random.default_rng(5)


def _images(b=4, size=16):
  return jnp.asarray(RNG.standard_normal((b, size, size, 3)), jnp.float32)


def _init(name, x, **overrides):
  model = create_model(name, 10, **overrides)
  return model, jax.jit(model.init, static_argnums=2)(jax.random.key(0), x,
                                                       False)


def _layer4_shape(name):
  model = create_model(name, 1000)
  x = jnp.zeros((1, 224, 224, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, False))
  _, state = jax.eval_shape(
      lambda v: model.apply(v, x, False, mutable=["intermediates"]), variables)
  return state["intermediates"]["layer4_out"][0].shape


def test_gcp_keeps_layer4_at_stride_1():
  assert _layer4_shape("resnet50_gap") == (1, 7, 7, 2048)
  assert _layer4_shape("resnet50_isqrt") == (1, 14, 14, 2048)
  assert _layer4_shape("resnet18_dropcov_d128") == (1, 14, 14, 512)


def test_param_names_are_readable():
  _, variables = _init("resnet_tiny_dropcov", _images())
  flat = flax.traverse_util.flatten_dict(variables["params"], sep="/")
  for path in ["stem/conv1/kernel", "stem/bn1/scale",
               "layer2/block0/downsample_conv/kernel",
               "layer4/block0/conv1/kernel", "head/reduce/conv_reduce/kernel",
               "head/reduce/bn_reduce/scale", "head/eca_conv", "head/fc/kernel",
               "head/fc/bias"]:
    assert path in flat, path


def test_stem_split_equals_full_forward():
  model, variables = _init("resnet_tiny_isqrt", _images())
  x = _images()
  h = model.apply(variables, x, False, method="stem")
  split = model.apply(variables, h, False, method="from_stem")
  np.testing.assert_allclose(split, model.apply(variables, x, False),
                             rtol=1e-6)


def _train_forward(model, variables, x, key):
  return model.apply(variables, x, True, rngs={"dropout": key},
                     mutable=["batch_stats", "intermediates"])


def test_dropcov_rate_matches_numpy():
  """Rate from the sown intermediates vs a float64 numpy computation of
  docs/method.md §6.1 on the same reduced features and ECA kernel."""
  model, variables = _init("resnet_tiny_dropcov", _images())
  x = _images()
  _, state = model.apply(variables, x, True, rngs={"dropout": jax.random.key(1)},
                         mutable=["batch_stats", "intermediates"],
                         capture_intermediates=lambda m, _: m.name == "reduce")
  feats = np.asarray(state["intermediates"]["head"]["reduce"]["__call__"][0],
                     np.float64)                             # (B, H, W, d)
  kernel = np.asarray(variables["params"]["head"]["eca_conv"], np.float64)
  s = feats.mean(axis=(1, 2))
  padded = np.pad(s, ((0, 0), (1, 1)))
  u = kernel[0] * padded[:, :-2] + kernel[1] * padded[:, 1:-1] + (
      kernel[2] * padded[:, 2:])
  a = np.exp(u - u.max(1, keepdims=True))
  a /= a.sum(1, keepdims=True)
  xp = feats * (1 + a[:, None, None, :])
  b, h, w, d = xp.shape
  rows = ref.covariance(xp.reshape(b, h * w, d)).sum(-1)
  cos = (a * rows).sum(1) / (np.linalg.norm(a, axis=1)
                             * np.linalg.norm(rows, axis=1))
  want = np.clip(1 - 10 / np.log2(d) * cos.mean(), 0, 1)
  got = float(state["intermediates"]["head"]["dropcov_rate"][0])
  assert abs(got - want) <= 1e-6


def test_dropcov_eval_equals_plain_covariance_head():
  """At evaluation DropCov is cov -> triu -> FC on the reduced features."""
  x = _images()
  dc_model, dc_vars = _init("resnet_tiny_dropcov", x)
  cov_model, cov_vars = _init("resnet_tiny_cov", x)
  params = flax.core.unfreeze(dc_vars["params"])
  del params["head"]["eca_conv"]
  assert (jax.tree.structure(params)
          == jax.tree.structure(flax.core.unfreeze(cov_vars["params"])))
  shared = {"params": params, "batch_stats": dc_vars["batch_stats"]}
  np.testing.assert_allclose(cov_model.apply(shared, x, False),
                             dc_model.apply(dc_vars, x, False), rtol=1e-6)


def test_dropcov_masks_reproducible_and_fresh_per_key():
  x = _images()
  model, variables = _init("resnet_tiny_dropcov", x, dim=64)
  a, state = _train_forward(model, variables, x, jax.random.key(3))
  assert float(state["intermediates"]["head"]["dropcov_rate"][0]) > 0.0
  b, _ = _train_forward(model, variables, x, jax.random.key(3))
  c, _ = _train_forward(model, variables, x, jax.random.key(4))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_dim_override_changes_the_reduction():
  _, variables = _init("resnet_tiny_isqrt", _images(), dim=12)
  assert variables["params"]["head"]["fc"]["kernel"].shape == (12 * 13 // 2,
                                                               10)


def test_isqrt_eigh_method_override_gives_the_same_logits():
  """representation_options={"method": "eigh"} (as a config's
  model.representation_options gives it) computes the same model: logits equal the
  Newton-Schulz head's to float32 rounding. 8 px images give a 2 x 2 map
  (M = 4 < d = 16: the Gram path). Gradients of both methods are compared
  in tests/ops/test_spectral_newton_schulz.py."""
  x = _images(size=8)
  model, variables = _init("resnet_tiny_isqrt", x)
  eigh_model = create_model(
      "resnet_tiny_isqrt", 10,
      representation_options={"num_iters": 5, "method": "eigh"})
  assert eigh_model.head.representation_options == (("method", "eigh"),
                                                    ("num_iters", 5))
  want = jax.jit(model.apply, static_argnums=2)(variables, x, False)
  got = jax.jit(eigh_model.apply, static_argnums=2)(variables, x, False)
  np.testing.assert_allclose(got, want, rtol=1e-4,
                             atol=1e-4 * float(jnp.abs(want).max()))


def test_channel_dropout_statistics():
  x = jnp.ones((64, 2, 2, 256))
  y = np.asarray(ops.channel_dropout(jax.random.key(0), x, 0.3))
  per_channel = y[:, 0, 0, :]
  assert np.all(y == y[:, :1, :1, :])                 # whole maps dropped
  assert set(np.unique(per_channel)) <= {0.0, np.float32(1 / 0.7)}
  assert abs((per_channel == 0).mean() - 0.3) < 0.02
  assert np.all(np.asarray(ops.channel_dropout(jax.random.key(0), x, 1.0))
                == 0.0)


def test_dropcov_all_zero_features_rate_one_finite():
  """Zero features: cosine 0/0 is guarded, rate = 1, everything finite."""
  x = jnp.zeros((2, 3, 3, 16))
  a = jnp.full((2, 16), 1 / 16)
  assert float(ops.adaptive_drop_rate(x, a)) == 1.0
  model, variables = _init("resnet_tiny_dropcov", _images())
  zero_in = jnp.zeros_like(_images())

  def loss(params):
    logits, _ = model.apply({**variables, "params": params}, zero_in, True,
                            rngs={"dropout": jax.random.key(0)},
                            mutable=["batch_stats", "intermediates"])
    return jnp.sum(logits ** 2)

  grads = jax.jit(jax.grad(loss))(variables["params"])
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("name", ["resnet_tiny_isqrt", "resnet_tiny_dropcov",
                                  "resnet_tiny_gap", "resnet_tiny_eig"])
def test_bfloat16_backbone_gives_finite_float32_logits(name):
  x = _images()
  model, variables = _init(name, x, dtype=jnp.bfloat16)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  out, _ = _train_forward(model, variables, x, jax.random.key(0))
  assert out.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out)))
  # The backbone really runs in bf16: its stage outputs are bf16.
  _, state = _train_forward(model, variables, x, jax.random.key(0))
  assert state["intermediates"]["layer4_out"][0].dtype == jnp.bfloat16


def test_train_forward_does_not_retrace():
  model, variables = _init("resnet_tiny_dropcov", _images())
  traces = []

  @jax.jit
  def step(variables, x, key):
    traces.append(1)
    return _train_forward(model, variables, x, key)

  for i in range(3):
    out, state = step(variables, _images(), jax.random.key(i))
    variables = {**variables, "batch_stats": state["batch_stats"]}
  assert len(traces) == 1


def test_batchnorm_running_average_uses_pytorch_momentum():
  """new = 0.9 old + 0.1 batch mean (PyTorch momentum 0.1)."""
  model, variables = _init("resnet_tiny_gap", _images())
  x = _images()
  _, cap = model.apply(variables, x, True, mutable=["batch_stats"],
                       capture_intermediates=lambda m, _: m.name == "conv1"
                       and m.parent.name == "stem")
  conv_out = np.asarray(cap["intermediates"]["stem"]["conv1"]["__call__"][0])
  new_mean = np.asarray(cap["batch_stats"]["stem"]["bn1"]["mean"])
  np.testing.assert_allclose(new_mean, 0.1 * conv_out.mean(axis=(0, 1, 2)),
                             rtol=1e-5, atol=1e-7)


def test_initialisation_matches_pytorch_recipes():
  """Conv: N(0, 2 / fan_out); Linear: U(+-1/sqrt(fan_in)); BN 1/0."""
  model = create_model("resnet18_isqrt_d128", 1000)
  variables = jax.jit(model.init, static_argnums=2)(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), False)
  p = variables["params"]
  kernel = np.asarray(p["layer4"]["block0"]["conv2"]["kernel"])  # 3x3x512x512
  assert abs(kernel.std() / np.sqrt(2 / (9 * 512)) - 1) < 0.01
  assert abs(np.abs(kernel).max() / kernel.std()) > 4   # not truncated at 2 sd
  fc = np.asarray(p["head"]["fc"]["kernel"])
  bound = 1 / np.sqrt(8256)
  assert fc.max() <= bound and fc.min() >= -bound
  assert abs(fc.std() / (bound / np.sqrt(3)) - 1) < 0.01
  bias = np.asarray(p["head"]["fc"]["bias"])
  assert bias.max() <= bound and bias.min() >= -bound and bias.std() > 0
  bn = p["head"]["reduce"]["bn_reduce"]
  assert np.all(np.asarray(bn["scale"]) == 1) and np.all(
      np.asarray(bn["bias"]) == 0)
