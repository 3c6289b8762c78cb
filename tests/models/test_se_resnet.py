"""SE-ResNet-50 of the TPAMI seed against a torch re-implementation of the
MindSpore definition (`torch_reference.se_resnet`), weights copied."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from gcp_jax.models import create_model
from gcp_jax.models.summary import count_params

torch = pytest.importorskip("torch")
se_torch = pytest.importorskip("torch_reference.se_resnet")
from torch_reference.resnet import randomize  # noqa: E402

WIDTH, DIM = 8, 16


def _jax_name(torch_name: str, strided: set[str]) -> tuple[str, str]:
  """torch parameter / buffer name -> (collection, gcp-jax path);
  `strided`: the blocks ('layer2.0', ...) whose shortcut is [pool, conv,
  bn]."""
  module, leaf = torch_name.rsplit(".", 1)
  stem = {"conv1_0": "stem/conv1_0", "conv1_1": "stem/conv1_1",
          "conv1_2": "stem/conv1_2", "bn1_0": "stem/bn1_0",
          "bn1_1": "stem/bn1_1", "bn1": "stem/bn1_2",
          "layer_reduce": "head/reduce/conv_reduce",
          "layer_reduce_bn": "head/reduce/bn_reduce", "fc": "head/fc"}
  if module in stem:
    path = stem[module]
  else:
    layer, block, rest = module.split(".", 2)
    shortcut = (("1", "2") if f"{layer}.{block}" in strided
                else ("0", "1"))
    rest = {"e2.0": "conv2", "e2.1": "bn2",
            f"down_sample_layer.{shortcut[0]}": "downsample_conv",
            f"down_sample_layer.{shortcut[1]}": "downsample_bn",
            "se_dense_0": "se/se_dense_0",
            "se_dense_1": "se/se_dense_1"}.get(rest, rest)
    path = f"{layer}/block{block}/{rest}"
  bn_leaf = {"weight": "scale", "bias": "bias", "running_mean": "mean",
             "running_var": "var"}
  if "bn" in path.rsplit("/", 1)[-1]:
    collection = "batch_stats" if leaf.startswith("running") else "params"
    return collection, f"{path}/{bn_leaf[leaf]}"
  return "params", f"{path}/{'kernel' if leaf == 'weight' else 'bias'}"


def _variables_from_torch(model, template) -> dict:
  flat = {}
  state = model.state_dict()
  strided = {n.split(".e2.")[0] for n in state if ".e2." in n}
  for name, value in state.items():
    if name.endswith("num_batches_tracked"):
      continue
    collection, path = _jax_name(name, strided)
    array = value.numpy()
    if array.ndim == 4:
      array = array.transpose(2, 3, 1, 0)      # OIHW -> HWIO
    elif array.ndim == 2:
      array = array.T                           # (out, in) -> (in, out)
    flat[f"{collection}/{path}"] = array
  want = traverse_util.flatten_dict(template, sep="/")
  assert set(flat) == set(want)
  for key, leaf in want.items():
    assert flat[key].shape == leaf.shape, key
  return traverse_util.unflatten_dict(flat, sep="/")


@pytest.mark.parametrize("size", [64, 66])
def test_logits_match_the_mindspore_definition(size):
  """Width 8, d = 16: every path (deep stem, the strided blocks' 3x3 +
  2x2 max-pool, the pooled shortcut, squeeze-excite in the last blocks of
  layer3 and layer4, 'same' padding of even and odd maps, the iSQRT head)."""
  torch.manual_seed(0)
  reference = randomize(se_torch.SEResNet(10, dim=DIM, width=WIDTH), 3)
  model = create_model("se_resnet50_isqrt", 10, width=WIDTH, dim=DIM)
  images = np.random.default_rng(1).normal(
      size=(2, size, size, 3)).astype(np.float32)
  template = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.asarray(images), False))
  variables = _variables_from_torch(reference, template)
  got = np.asarray(model.apply(variables, images, False))
  with torch.no_grad():
    want = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  scale = np.abs(want).max()
  assert np.abs(got - want).max() <= 1e-4 * scale


def test_full_size_parameter_count_equals_the_reference():
  reference = se_torch.SEResNet(1001, dim=128)
  want = sum(p.numel() for p in reference.parameters())
  model = create_model("se_resnet50_isqrt_d128", 1001)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 224, 224, 3)), False))
  assert count_params(variables["params"]) == want == 34_680_201
