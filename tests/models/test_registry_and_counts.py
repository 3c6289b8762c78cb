"""Every registered model builds; parameter and FLOP counts of the papers."""

import jax
import jax.numpy as jnp
import pytest

from gcp_jax.models import create_model, model_names
from gcp_jax.models.summary import count_params, summarize


def _abstract_init(model, size):
  return jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), False))


def _input_size(name):
  if name.startswith("resnet_tiny"):
    return 16
  if name.startswith("deit_drop_tiny_test"):
    return 64
  return 32 if name.startswith("deit_tiny_test") else 224


def _covering_names() -> list[str]:
  """Registered names that exercise every head variant (on ResNet-50, the
  bottleneck backbone, and the tiny models) and every depth (with GAP,
  iSQRT, iSQRT d=128 and DropCov d=128), each ViT and each tiny model.
  The ResNet registry is the product depth x head, built by the same code,
  so the other combinations add no code path; they run with -m slow."""
  depth_heads = ("gap", "isqrt", "isqrt_d128", "dropcov_d128")
  return [n for n in model_names()
          if not n.startswith("resnet") or n.startswith("resnet50_")
          or n.startswith("resnet_tiny") or n.split("_", 1)[1] in depth_heads]


COVERING = _covering_names()


def _output_shape_check(name):
  model = create_model(name, 7)
  size = _input_size(name)
  x = jnp.zeros((2, size, size, 3))
  if name.startswith("resnet_tiny") or "tiny_test" in name:
    variables = model.init(jax.random.key(0), x, False)
    out = model.apply(variables, x, False)
  else:
    variables = _abstract_init(model, size)
    out = jax.eval_shape(lambda v: model.apply(v, x, False), variables)
  assert out.shape == (2, 7) and out.dtype == jnp.float32


@pytest.mark.parametrize("name", COVERING)
def test_every_model_output_shape(name):
  """Big models abstractly (no allocation), tiny ones for real."""
  _output_shape_check(name)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [n for n in model_names() if n not in COVERING])
def test_remaining_model_output_shapes(name):
  _output_shape_check(name)


# Seed tables (docs/method.md §7.2, issue 3): millions of parameters, 1000
# classes.
PARAMS_M = {
    "resnet18_gap": 11.7, "resnet34_gap": 21.8, "resnet50_gap": 25.6,
    "resnet101_gap": 44.6,
    "resnet18_isqrt_d128": 19.5, "resnet34_isqrt_d128": 29.6,
    "resnet50_isqrt_d128": 32.0, "resnet101_isqrt_d128": 51.0,
    "resnet50_dropcov_d128": 32.0, "resnet50_isqrt": 56.9,
    "deit_s_dropcov": 25.6, "deit_drop_small_dropcov": 25.6,
}


@pytest.mark.parametrize("name,millions", sorted(PARAMS_M.items()))
def test_parameter_counts(name, millions):
  variables = _abstract_init(create_model(name, 1000), _input_size(name))
  assert abs(count_params(variables["params"]) / 1e6 - millions) <= 0.1


def test_exact_isqrt_resnet50_count():
  """56,929,832: the iSQRT-COV ResNet-50 size quoted by third-party model
  zoos."""
  variables = _abstract_init(create_model("resnet50_isqrt", 1000), 224)
  assert count_params(variables["params"]) == 56_929_832


def test_fc_input_dims():
  for name, dim in [("resnet50_isqrt", 32896), ("resnet50_isqrt_d128", 8256),
                    ("resnet18_bcnn", 65536), ("deit_s_dropcov", 3456)]:
    variables = _abstract_init(create_model(name, 10), _input_size(name))
    assert variables["params"]["head"]["fc"]["kernel"].shape == (dim, 10)


# Multiply-adds (the papers' "GFLOPs"), 224 x 224, within 3%.
GMACS = {
    ("resnet18_gap", False): 1.81, ("resnet18_isqrt_d128", False): 3.11,
    ("resnet34_gap", False): 3.66, ("resnet34_isqrt_d128", False): 5.56,
    ("resnet50_gap", True): 3.86, ("resnet50_isqrt_d128", True): 6.19,
}


@pytest.mark.parametrize("name,v1", sorted(GMACS))
def test_flops_match_papers(name, v1):
  overrides = {"stride_in_1x1": True} if v1 else {}
  summary = summarize(create_model(name, 1000, **overrides), 224)
  assert abs(summary.gmacs / GMACS[(name, v1)] - 1.0) <= 0.03
  assert summary.xla_gflops > summary.gmacs      # multiply-add counted twice


def test_unknown_model_lists_valid_names():
  with pytest.raises(ValueError, match="'resnet50_sqrt'.*resnet50_isqrt"):
    create_model("resnet50_sqrt", 10)


def test_unknown_override_lists_valid_ones():
  with pytest.raises(ValueError, match="'dims'.*valid overrides:.*dim"):
    create_model("resnet50_isqrt", 10, dims=128)


def test_stride_in_1x1_needs_bottleneck():
  model = create_model("resnet18_gap", 10, stride_in_1x1=True)
  with pytest.raises(ValueError, match="Bottleneck"):
    _abstract_init(model, 224)
