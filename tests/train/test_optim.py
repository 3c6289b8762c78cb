"""Optimisers against PyTorch's update rules.

The references are numpy transcriptions (float64) of the algorithms in the
PyTorch documentation of `torch.optim.SGD` and `torch.optim.AdamW`, one
param group per (weight decay, lr multiplier); when torch is installed the
same runs are also checked against torch itself.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util

from gcp_jax.models import create_model
from gcp_jax.train.optim import (NO_DECAY_1D, NO_DECAY_BN_AND_BIAS,
                                 create_optimizer, describe_optimizer,
                                 param_groups, param_paths)
from gcp_jax.train.schedules import create_lr_schedule

SHAPES = {
    "stem/conv1/kernel": (3, 3, 2, 4), "stem/bn1/scale": (4,),
    "stem/bn1/bias": (4,), "layer1/block0/conv1/kernel": (3, 3, 4, 4),
    "layer1/block0/downsample_bn/scale": (4,),
    "layer1/block0/downsample_bn/bias": (4,), "head/fc/kernel": (6, 3),
    "head/fc/bias": (3,), "head/fc_cls/kernel": (6, 3),
    "cls_token": (1, 1, 6)}
# With no_decay = (NO_DECAY_BN_AND_BIAS,) and MULTIPLIERS, written out.
NOT_DECAYED = {"stem/bn1/scale", "stem/bn1/bias",
               "layer1/block0/downsample_bn/scale",
               "layer1/block0/downsample_bn/bias", "head/fc/bias"}
MULTIPLIERS = (("head/fc/.*", 5.0), ("head/.*", 0.5), ("cls_token", 0.0))
FACTOR = {"head/fc/kernel": 5.0, "head/fc/bias": 5.0,
          "head/fc_cls/kernel": 0.5, "cls_token": 0.0}
NUM_STEPS = 4
BASE_LR = {"sgd": 0.1, "adamw": 1e-3}


def _lrs(name):
  """Schedule under test: x0.1 after the second update (steps_per_epoch 1)."""
  return [BASE_LR[name] * (0.1 if t >= 2 else 1.0) for t in range(NUM_STEPS)]


def _schedule(name):
  config = ml_collections.ConfigDict(
      {"name": "step", "milestones": (2,), "gamma": 0.1})
  return create_lr_schedule(config, BASE_LR[name], 1, NUM_STEPS)


def _config(name, /, **overrides):
  fields = {"sgd": {"momentum": 0.9, "nesterov": False, "weight_decay": 0.05},
            "adamw": {"b1": 0.9, "b2": 0.999, "eps": 1e-8,
                      "weight_decay": 0.05}}[name]
  fields.update(name=name, no_decay=(NO_DECAY_BN_AND_BIAS,),
                lr_multipliers=MULTIPLIERS)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def _problem(seed=0):
  """float32 initial params (flat) and NUM_STEPS gradients (flat)."""
  rng = np.random.default_rng(seed)
  draw = lambda: {k: rng.standard_normal(s).astype(np.float32)
                  for k, s in SHAPES.items()}
  return draw(), [draw() for _ in range(NUM_STEPS)]


def _run_optax(config, schedule, params, grads):
  tx = create_optimizer(config, schedule)
  nested = lambda flat: traverse_util.unflatten_dict(
      {k: jnp.asarray(v) for k, v in flat.items()}, sep="/")
  p = nested(params)
  state = tx.init(p)
  update = jax.jit(tx.update)
  for g in grads:
    updates, state = update(nested(g), state, p)
    p = optax.apply_updates(p, updates)
  return {k: np.asarray(v) for k, v in
          traverse_util.flatten_dict(p, sep="/").items()}


def _sgd_reference(params, grads, lrs, wd, momentum, nesterov):
  """PyTorch docs, torch.optim.SGD (dampening 0), per param group."""
  p = {k: v.astype(np.float64) for k, v in params.items()}
  buf = {}
  for t, grad in enumerate(grads):
    for k in p:
      g = grad[k] + (0.0 if k in NOT_DECAYED else wd) * p[k]
      buf[k] = g if t == 0 else momentum * buf[k] + g
      d = g + momentum * buf[k] if nesterov else buf[k]
      p[k] = p[k] - lrs[t] * FACTOR.get(k, 1.0) * d
  return p


def _adamw_reference(params, grads, lrs, wd, b1, b2, eps):
  """PyTorch docs, torch.optim.AdamW (amsgrad off), per param group."""
  p = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  for t, grad in enumerate(grads, start=1):
    for k in p:
      lr = lrs[t - 1] * FACTOR.get(k, 1.0)
      p[k] = p[k] - lr * (0.0 if k in NOT_DECAYED else wd) * p[k]
      m[k] = b1 * m[k] + (1 - b1) * grad[k]
      v[k] = b2 * v[k] + (1 - b2) * grad[k]**2
      m_hat, v_hat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
      p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
  return p


def _assert_params_close(got, want):
  for k in SHAPES:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7,
                               err_msg=k)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_pytorch_equations(nesterov):
  params, grads = _problem()
  got = _run_optax(_config("sgd", nesterov=nesterov), _schedule("sgd"),
                   params, grads)
  want = _sgd_reference(params, grads, _lrs("sgd"), 0.05, 0.9, nesterov)
  _assert_params_close(got, want)
  np.testing.assert_array_equal(got["cls_token"], params["cls_token"])


def test_adamw_matches_pytorch_equations():
  params, grads = _problem(1)
  got = _run_optax(_config("adamw", b1=0.8, b2=0.99, eps=1e-6),
                   _schedule("adamw"), params, grads)
  want = _adamw_reference(params, grads, _lrs("adamw"), 0.05, 0.8, 0.99,
                          1e-6)
  _assert_params_close(got, want)
  np.testing.assert_array_equal(got["cls_token"], params["cls_token"])


def _torch_run(torch, name, params, grads, nesterov=False):
  """The same problem through torch.optim with explicit param groups."""
  tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
  groups = {}
  for k in SHAPES:
    groups.setdefault((k not in NOT_DECAYED, FACTOR.get(k, 1.0)), []).append(k)
  param_groups_ = [{"params": [tensors[k] for k in keys],
                    "weight_decay": 0.05 if decay else 0.0, "factor": factor}
                   for (decay, factor), keys in groups.items()]
  if name == "sgd":
    opt = torch.optim.SGD(param_groups_, lr=BASE_LR[name], momentum=0.9,
                          nesterov=nesterov)
  else:
    opt = torch.optim.AdamW(param_groups_, lr=BASE_LR[name])
  for lr, grad in zip(_lrs(name), grads):
    for group in opt.param_groups:
      group["lr"] = lr * group["factor"]
    for k, x in tensors.items():
      x.grad = torch.tensor(grad[k])
    opt.step()
  return {k: x.detach().numpy() for k, x in tensors.items()}


@pytest.mark.parametrize("name,nesterov", [("sgd", False), ("sgd", True),
                                           ("adamw", False)])
def test_matches_torch(name, nesterov):
  torch = pytest.importorskip("torch")
  params, grads = _problem(2)
  overrides = {"nesterov": nesterov} if name == "sgd" else {}
  got = _run_optax(_config(name, **overrides), _schedule(name), params, grads)
  _assert_params_close(got, _torch_run(torch, name, params, grads, nesterov))


def _abstract_params(name, size):
  model = create_model(name, 10)
  return jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), False))["params"]


def _flat(tree):
  return dict(zip(jax.tree.leaves(param_paths(tree)), jax.tree.leaves(tree)))


def _not_decayed(params, config):
  flags = dict(zip(jax.tree.leaves(param_paths(params)),
                   jax.tree.leaves(param_groups(params, config).decay)))
  return {k for k, decayed in flags.items() if not decayed}


def test_param_paths_are_flatten_dict_keys():
  params = _abstract_params("resnet_tiny_isqrt", 16)
  assert (list(_flat(params))
          == list(traverse_util.flatten_dict(params, sep="/")))


def test_bn_and_bias_on_resnet():
  """Every BN scale/bias and the FC bias; all kernels decayed."""
  params = _abstract_params("resnet_tiny_isqrt", 16)
  paths = list(_flat(params))
  want = {p for p in paths if p.endswith(("/scale", "/bias"))}
  assert len(want) == 27 and "head/reduce/bn_reduce/scale" in want
  assert "layer2/block0/downsample_bn/bias" in want
  assert _not_decayed(params, _config("sgd", lr_multipliers=())) == want


def test_1d_on_deit_is_timm_filter():
  """ndim <= 1 or a bias (the (heads, head_dim) q/k/v biases are 2-D);
  cls_token and pos_embed are decayed, as in the DropCov reference."""
  params = _abstract_params("deit_tiny_test_gcp", 32)
  flat = _flat(params)
  want = {p for p, x in flat.items() if len(x.shape) <= 1}
  want |= {f"block{i}/attn/{n}/bias" for i in range(2)
           for n in ("query", "key", "value")}
  got = _not_decayed(params, _config("adamw", no_decay=(NO_DECAY_1D,),
                                     lr_multipliers=()))
  assert got == want
  assert not {"cls_token", "pos_embed", "block0/attn/query/kernel"} & got


def test_eca_kernel_counts_as_1d():
  params = _abstract_params("resnet_tiny_dropcov", 16)
  config = _config("sgd", no_decay=(NO_DECAY_1D,), lr_multipliers=())
  assert "head/eca_conv" in _not_decayed(params, config)


def test_multipliers_first_match_wins():
  params = _abstract_params("deit_tiny_test_gcp", 32)
  config = _config("sgd", no_decay=(),
                   lr_multipliers=(("head/fc/.*", 5.0), ("head/.*", 0.5)))
  factors = dict(zip(jax.tree.leaves(param_paths(params)),
                     jax.tree.leaves(param_groups(params, config).multiplier)))
  assert {k: v for k, v in factors.items() if v != 1.0} == {
      "head/fc/kernel": 5.0, "head/fc/bias": 5.0, "head/fc_cls/kernel": 0.5,
      "head/fc_cls/bias": 0.5, "head/reduce/kernel": 0.5}


def test_masks_reach_the_update_on_a_real_model():
  """Zero gradients: the first SGD update is -lr k wd p on decayed params,
  exactly 0 elsewhere."""
  params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype),
                        _abstract_params("resnet_tiny_isqrt", 16))
  config = _config("sgd", weight_decay=0.01,
                   lr_multipliers=(("head/fc/.*", 5.0),))
  tx = create_optimizer(config, _schedule("sgd"))
  updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params),
                                  tx.init(params), params)
  not_decayed = _not_decayed(params, config)
  for path, u in _flat(updates).items():
    k = 5.0 if path.startswith("head/fc/") else 1.0
    want = 0.0 if path in not_decayed else -0.1 * k * 0.01
    np.testing.assert_allclose(u, want, rtol=1e-6, err_msg=path)


def test_describe_optimizer_counts_groups():
  params = _abstract_params("resnet_tiny_isqrt", 16)
  text = describe_optimizer(params, _config(
      "sgd", lr_multipliers=(("head/fc/.*", 5.0),), b1=0.9))
  lines = text.splitlines()
  assert lines[0].startswith("sgd: weight_decay=0.05 momentum=0.9")
  assert lines[0].endswith("(ignored: b1)")
  assert [line.split(":")[0].strip() for line in lines[1:]] == [
      "decay, lr x1", "decay, lr x5", "no decay, lr x1", "no decay, lr x5"]
  assert "1 tensors, 1,360 params (head/fc/kernel)" in lines[2]
  assert " 26 tensors, " in lines[3] and "(head/fc/bias)" in lines[4]


@pytest.mark.parametrize("overrides,message", [
    ({"name": "adam"}, "valid names: adamw, sgd"),
    ({"weight_decay": None}, r"needs the field\(s\) \['weight_decay'\]"),
    ({"momentum": None}, r"needs the field\(s\) \['momentum'\]"),
    ({"weight_deacy": 0.1}, r"Unknown optimizer field\(s\) \['weight_deacy'"),
    ({"nesterov": True, "momentum": 0.0}, "nesterov needs momentum"),
    ({"weight_decay": -1e-4}, "weight_decay must be in"),
    ({"no_decay": ("@bn",)}, "unknown preset '@bn'; presets: @bn_and_bias"),
    ({"no_decay": ("head/(",)}, "invalid regex"),
    ({"no_decay": "@1d"}, "are tuples"),
    ({"lr_multipliers": (("head/fc/.*", -1.0),)}, "factor >= 0"),
    ({"lr_multipliers": (("head/fc/.*",),)}, "factor >= 0"),
])
def test_config_errors(overrides, message):
  with pytest.raises(ValueError, match=message):
    create_optimizer(_config("sgd", **overrides), _schedule("sgd"))


@pytest.mark.parametrize("field", ["no_decay", "lr_multipliers"])
def test_rule_matching_nothing_is_an_error(field):
  rule = "head/classifier/.*"
  value = (rule,) if field == "no_decay" else ((rule, 5.0),)
  tx = create_optimizer(_config("sgd", **{field: value}), _schedule("sgd"))
  params = _abstract_params("resnet_tiny_isqrt", 16)
  with pytest.raises(ValueError, match=f"No parameter matches {field} "
                     f"'head/classifier/.\\*'"):
    jax.eval_shape(tx.init, params)
