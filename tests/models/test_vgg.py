"""VGG-16-BN and fast-MPN-COV's MPN-COV VGG-16 against a test-only PyTorch
transcription (`torch_reference.vgg`): parameter counts, and eval-mode
logits with copied weights."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from gcp_jax.convert import load_pretrained
from gcp_jax.models import create_model
from gcp_jax.models.summary import count_params
from torch_reference import vgg as torch_vgg
from torch_reference.resnet import randomize

RNG = np.random.default_rng(16)


def _abstract_params(model, size=224):
  return jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), False))["params"]


def _torch_count(**kwargs) -> int:
  with torch.device("meta"):
    model = torch_vgg.MPNCOVVGG(1000, **kwargs)
  return sum(p.numel() for p in model.parameters())


def test_parameter_counts_equal_the_reference():
  """mpncovvgg16_bn: 170,479,144 parameters, 650.3 MiB in float32 (the
  fast-MPN-COV README's 650.4 MB checkpoint, which adds BN statistics)."""
  isqrt = count_params(_abstract_params(create_model("vgg16_bn_isqrt", 1000)))
  assert isqrt == _torch_count() == 170_479_144
  gap = count_params(_abstract_params(create_model("vgg16_bn_gap", 1000)))
  assert gap == _torch_count(head="gap", hidden=())


def test_fc_input_dims_follow_the_representation():
  for name, dim in [("vgg16_bn_isqrt", 4096), ("vgg16_bn_gap", 512),
                    ("vgg16_bn_bcnn", 262144), ("vgg16_bn_cbp", 8192)]:
    params = _abstract_params(create_model(name, 10))
    assert params["head"]["fc"]["kernel"].shape == (dim, 10), name
  params = _abstract_params(create_model("vgg16_bn_isqrt", 10))
  assert params["head"]["hidden0"]["kernel"].shape == (32896, 4096)
  assert "reduce" not in _abstract_params(create_model("vgg16_bn_cbp", 10))[
      "head"]


def test_last_block_keeps_a_16x_map_and_no_last_stride():
  """448 px -> 28 x 28 x 512 at conv5_3 (the fifth max-pool dropped)."""
  model = create_model("vgg16_bn_isqrt", 10)
  assert not hasattr(model, "last_stride")
  x = jnp.zeros((1, 448, 448, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, False))
  _, state = jax.eval_shape(
      lambda v: model.apply(v, x, False, mutable=["intermediates"]), variables)
  assert state["intermediates"]["block5_out"][0].shape == (1, 28, 28, 512)
  assert state["intermediates"]["stem_out"][0].shape == (1, 224, 224, 64)
  with pytest.raises(ValueError, match="Unknown override 'last_stride'"):
    create_model("vgg16_bn_gap", 10, last_stride=2)


def _copy_torch_weights(tmodel: torch.nn.Module, params, stats):
  """The torch state into the JAX variable trees (test-only mapping)."""
  params = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(params), sep="/")
  stats = flax.traverse_util.flatten_dict(flax.core.unfreeze(stats), sep="/")
  t = lambda a: np.asarray(a.detach().numpy(), np.float32)  # noqa: E731
  convs = [m for m in tmodel.features if isinstance(m, torch.nn.Conv2d)]
  bns = [m for m in tmodel.features if isinstance(m, torch.nn.BatchNorm2d)]
  names = [f"block{i + 1}/{{}}{j + 1}"
           for i, widths in enumerate(tmodel.blocks)
           for j in range(len(widths))]
  assert len(names) == len(convs) == len(bns)
  for name, conv, bn in zip(names, convs, bns):
    params[name.format("conv") + "/kernel"] = t(conv.weight).transpose(
        2, 3, 1, 0)
    params[name.format("conv") + "/bias"] = t(conv.bias)
    params[name.format("bn") + "/scale"] = t(bn.weight)
    params[name.format("bn") + "/bias"] = t(bn.bias)
    stats[name.format("bn") + "/mean"] = t(bn.running_mean)
    stats[name.format("bn") + "/var"] = t(bn.running_var)
  if tmodel.head == "isqrt":
    conv, bn, _ = tmodel.representation.conv_dr_block
    params["head/reduce/conv_reduce/kernel"] = t(conv.weight).transpose(
        2, 3, 1, 0)
    params["head/reduce/bn_reduce/scale"] = t(bn.weight)
    params["head/reduce/bn_reduce/bias"] = t(bn.bias)
    stats["head/reduce/bn_reduce/mean"] = t(bn.running_mean)
    stats["head/reduce/bn_reduce/var"] = t(bn.running_var)
  linears = [m for m in tmodel.classifier if isinstance(m, torch.nn.Linear)]
  fcs = [f"head/hidden{i}" for i in range(len(linears) - 1)] + ["head/fc"]
  for name, linear in zip(fcs, linears):
    params[name + "/kernel"] = t(linear.weight).T
    params[name + "/bias"] = t(linear.bias)
  unflat = lambda d: flax.traverse_util.unflatten_dict(  # noqa: E731
      {k: jnp.asarray(v) for k, v in d.items()}, sep="/")
  return unflat(params), unflat(stats)


@pytest.mark.parametrize("head,hidden", [("isqrt", (24, 16)), ("gap", ())])
def test_logits_equal_the_torch_reference(head, hidden):
  """Full VGG-16-BN, 64 x 64 images (4 x 4 conv5_3 map), random BN
  statistics, the reference in float64; eval mode (dropout off)."""
  torch.manual_seed(0)
  tmodel = randomize(torch_vgg.MPNCOVVGG(5, head=head, dim=32,
                                         hidden=hidden), 1).double()
  name = "vgg16_bn_isqrt" if head == "isqrt" else "vgg16_bn_gap"
  overrides = {"dim": 32, "hidden_dims": hidden} if head == "isqrt" else {}
  model = create_model(name, 5, **overrides)
  x = RNG.standard_normal((2, 64, 64, 3))
  variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                         False)
  params, stats = _copy_torch_weights(tmodel, variables["params"],
                                      variables["batch_stats"])
  got = model.apply({"params": params, "batch_stats": stats},
                    jnp.asarray(x, jnp.float32), False)
  with torch.no_grad():
    want = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  scale = np.abs(want).max()
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)


def test_reference_checkpoint_imports(tmp_path):
  """A `.pth` under fast-MPN-COV's names (`features.module.{k}` as its
  main.py's DataParallel saves them, `representation.conv_dr_block`,
  `classifier.{0,3,6}`) loads through the importer into the logits of the
  torch model."""
  torch.manual_seed(1)
  tmodel = randomize(torch_vgg.MPNCOVVGG(5, dim=16, hidden=(12, 8)), 2)
  state = {k.replace("features.", "features.module.", 1): v
           for k, v in tmodel.state_dict().items()}
  torch.save({"state_dict": state}, tmp_path / "mpncovvgg.pth.tar")
  model = create_model("vgg16_bn_isqrt", 5, dim=16, hidden_dims=(12, 8))
  x = RNG.standard_normal((2, 64, 64, 3))
  template = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), False))
  variables, report = load_pretrained(tmp_path / "mpncovvgg.pth.tar",
                                      template)
  assert not report.not_loaded and not report.unexpected
  got = model.apply(variables, jnp.asarray(x, jnp.float32), False)
  with torch.no_grad():
    want = tmodel.double()(
        torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-4,
                             atol=1e-4 * np.abs(want).max())
  # The fine-grained model (one FC, new classes) from that file with the
  # ignore list of configs/finetune_fmpn_vgg.py.
  config = _finetune_config()
  one_fc = create_model("vgg16_bn_isqrt", 7, dim=16, hidden_dims=())
  template = jax.eval_shape(lambda: one_fc.init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), False))
  _, report = load_pretrained(tmp_path / "mpncovvgg.pth.tar", template,
                              ignore=tuple(config.init_from_ignore))
  assert set(report.not_loaded) == {"params/head/fc/kernel",
                                    "params/head/fc/bias"}
  assert len(report.unexpected) == 4         # hidden0/1 kernel and bias


def _finetune_config():
  from configs import finetune_fmpn_vgg
  return finetune_fmpn_vgg.get_config("cub")


def test_stem_split_and_hidden_dropout():
  """from_stem(stem(x)) == x's logits; the hidden layers' dropout is active
  in training only (different 'dropout' keys, different logits)."""
  model = create_model("vgg16_bn_isqrt", 3, dim=4, hidden_dims=(8,),
                       blocks=((4,), (8,)))
  x = jnp.asarray(RNG.standard_normal((2, 8, 8, 3)), jnp.float32)
  variables = model.init(jax.random.key(0), x, False)
  h = model.apply(variables, x, False, method="stem")
  assert h.shape == (2, 4, 4, 4)
  np.testing.assert_allclose(
      model.apply(variables, h, False, method="from_stem"),
      model.apply(variables, x, False), rtol=1e-6)
  train = lambda key: model.apply(  # noqa: E731
      variables, x, True, rngs={"dropout": jax.random.key(key)},
      mutable=["batch_stats"])[0]
  assert not np.allclose(train(1), train(2))
  np.testing.assert_allclose(train(1), train(1))
