"""DeiT backbone and token heads."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax import ops
from gcp_jax.models import create_model, token_heads

RNG = np.random.default_rng(6)


def _images(b=2):
  return jnp.asarray(RNG.standard_normal((b, 32, 32, 3)), jnp.float32)


def _init(name, **overrides):
  model = create_model(name, 10, **overrides)
  return model, jax.jit(model.init, static_argnums=2)(jax.random.key(0),
                                                       _images(), False)


def test_cross_covariance_matches_numpy():
  q = RNG.standard_normal((2, 3, 20, 4))
  k = RNG.standard_normal((2, 3, 20, 5))
  got = ops.cross_covariance(jnp.asarray(q, jnp.float32),
                             jnp.asarray(k, jnp.float32))
  qc = q - q.mean(2, keepdims=True)
  kc = k - k.mean(2, keepdims=True)
  want = np.einsum("bhnv,bhnw->bhvw", qc, kc) / 20
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_token_dropout_is_tokenwise_and_shared_by_q_and_k(monkeypatch):
  """Each (sample, head, token) row of Q and K is kept or dropped as a
  whole, with the same mask for both (docs/design.md, 'Transformer DropCov')."""
  head = token_heads.TokenDropCovHead(10, num_heads=2, head_dim=4,
                                      token_rate=0.5, element_rate=0.0)
  tokens = jnp.asarray(RNG.standard_normal((3, 1 + 50, 16)), jnp.float32)
  variables = head.init(jax.random.key(0), tokens, False)
  captured = []
  real = ops.cross_covariance

  def spy(q, k):
    captured.append((q, k))
    return real(q, k)

  monkeypatch.setattr(ops, "cross_covariance", spy)
  head.apply(variables, tokens, True, rngs={"dropout": jax.random.key(1)})
  q, k = (np.asarray(a) for a in captured[0])          # (B, H, N, w)
  q_dropped = np.all(q == 0, axis=-1)
  k_dropped = np.all(k == 0, axis=-1)
  assert np.array_equal(q_dropped, k_dropped)
  assert np.all((q == 0).any(-1) == q_dropped)         # whole rows only
  assert 0.35 < q_dropped.mean() < 0.65


@pytest.mark.parametrize("name", ["deit_tiny_test_cls", "deit_tiny_test_gcp",
                                  "deit_tiny_test_dropcov"])
def test_eval_is_deterministic_and_train_uses_dropout(name):
  model, variables = _init(name, drop_path_rate=0.5)
  x = _images(8)
  a = model.apply(variables, x, False)
  np.testing.assert_array_equal(a, model.apply(variables, x, False))
  t1 = model.apply(variables, x, True, rngs={"dropout": jax.random.key(1)})
  t2 = model.apply(variables, x, True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(t1, t2)          # drop path (and DropCov) active
  assert bool(jnp.all(jnp.isfinite(t1)))


def test_second_order_logits_add_to_class_token_logits():
  model, variables = _init("deit_tiny_test_gcp")
  x = _images()
  params = flax.core.unfreeze(variables["params"])
  params["head"]["fc"]["kernel"] = jnp.zeros_like(params["head"]["fc"]["kernel"])
  params["head"]["fc"]["bias"] = jnp.zeros_like(params["head"]["fc"]["bias"])
  cls_model = create_model("deit_tiny_test_cls", 10)
  cls_params = dict(params)
  cls_params["head"] = {"fc_cls": params["head"]["fc_cls"]}
  np.testing.assert_allclose(model.apply({"params": params}, x, False),
                             cls_model.apply({"params": cls_params}, x, False),
                             rtol=1e-6)


def test_stem_split_and_wrong_image_size():
  model, variables = _init("deit_tiny_test_dropcov")
  x = _images()
  tokens = model.apply(variables, x, False, method="stem")
  assert tokens.shape == (2, 1 + 16, 32)
  np.testing.assert_allclose(
      model.apply(variables, tokens, False, method="from_stem"),
      model.apply(variables, x, False), rtol=1e-6)
  with pytest.raises(ValueError, match="32x32 images.*got 48x48"):
    model.apply(variables, jnp.zeros((1, 48, 48, 3)), False)


def test_bfloat16_backbone():
  model, variables = _init("deit_tiny_test_gcp", dtype=jnp.bfloat16)
  out = model.apply(variables, _images(), False)
  assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))


def test_reference_dropcov_options():
  """projections=3: the third chunk of W_r is a parameter the logits do not
  read; centering="scalar" subtracts one mean per (sample, head) slice; bad
  option values are errors that name the choices."""
  tokens = jnp.asarray(RNG.standard_normal((2, 1 + 12, 16)), jnp.float32)
  head = token_heads.TokenDropCovHead(5, num_heads=2, head_dim=3,
                                      projections=3, centering="scalar",
                                      linear_init="timm")
  variables = head.init(jax.random.key(0), tokens, False)
  params = flax.core.unfreeze(variables["params"])
  kernel = np.asarray(params["reduce"]["kernel"])
  assert kernel.shape == (16, 3 * 2 * 3)
  assert float(np.abs(params["fc"]["bias"]).max()) == 0.0
  out = head.apply({"params": params}, tokens, False)
  params["reduce"]["kernel"] = jnp.asarray(kernel).at[:, 12:].set(7.0)
  np.testing.assert_array_equal(head.apply({"params": params}, tokens, False),
                                out)
  patches = np.asarray(tokens[:, 1:], np.float64)
  qk = (patches @ kernel).reshape(2, 12, 3, 2, 3).transpose(2, 0, 3, 1, 4)
  q = qk[0] - qk[0].mean(axis=(-2, -1), keepdims=True)
  k = qk[1] - qk[1].mean(axis=(-2, -1), keepdims=True)
  cov = np.einsum("bhnv,bhnw->bhvw", q, k).reshape(2, -1) / 12
  p = jax.tree.map(np.asarray, params)
  want = (np.asarray(tokens[:, 0]) @ p["fc_cls"]["kernel"]
          + p["fc_cls"]["bias"] + cov @ p["fc"]["kernel"] + p["fc"]["bias"])
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-6)
  for field, value, match in (("projections", 4, "2 or 3"),
                              ("centering", "mean", "'feature' or"),
                              ("linear_init", "xavier", "pytorch")):
    bad = head.clone(**{field: value})
    with pytest.raises(ValueError, match=match):
      bad.init(jax.random.key(0), tokens, False)
