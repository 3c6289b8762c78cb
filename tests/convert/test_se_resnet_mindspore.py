"""MindSpore `.ckpt` files of the TPAMI seed's SE-ResNet-50 (`src/resnet.py`
`se_resnet50`: deep stem `conv1_{0,1,2}` with BNs `bn1_0`, `bn1_1`, `bn1`,
strided blocks' `e2` and [max-pool, conv, BN] `down_sample_layer`,
`se_dense_{0,1}`, classifier `fc`) through `load_pretrained`, against the
torch re-implementation `torch_reference.se_resnet` with the same
weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax.convert import WeightMappingError, load_pretrained
from gcp_jax.convert import write_mindspore_checkpoint
from gcp_jax.models import create_model

torch = pytest.importorskip("torch")
se_torch = pytest.importorskip("torch_reference.se_resnet")
from torch_reference.resnet import randomize  # noqa: E402

MINDSPORE_BN = {"weight": "gamma", "bias": "beta",
                "running_mean": "moving_mean",
                "running_var": "moving_variance"}


def _mindspore_state(model) -> dict[str, np.ndarray]:
  """The module's state under MindSpore names: BN leaves gamma / beta /
  moving_mean / moving_variance, no `num_batches_tracked`; plus optimizer
  state, as a training checkpoint has."""
  bns = {name for name, m in model.named_modules()
         if isinstance(m, torch.nn.BatchNorm2d)}
  state = {}
  for name, value in model.state_dict().items():
    module, leaf = name.rsplit(".", 1)
    if leaf == "num_batches_tracked":
      continue
    if module in bns:
      name = f"{module}.{MINDSPORE_BN[leaf]}"
    state[name] = value.numpy()
  state["moments.conv1_0.weight"] = np.zeros_like(state["conv1_0.weight"])
  state["learning_rate"] = np.array(0.1, np.float32)
  state["global_step"] = np.array([10], np.int32)
  return state


@pytest.fixture(scope="module")
def se_resnet50():
  """The full-size seed network (1001 classes, d = 128) with randomised
  BatchNorms of MindSpore's epsilon 1e-4 (the importer's default for
  MindSpore files: it adds 1e-4 - 1e-5 to every variance)."""
  torch.manual_seed(0)
  model = randomize(se_torch.SEResNet(1001, dim=128), 3)
  for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.eps = 1e-4
  return model


def _template(name, classes, size=64, **kwargs):
  model = create_model(name, classes, **kwargs)
  return model, jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), False))


def test_se_resnet50_ckpt_logits_match_the_torch_definition(se_resnet50,
                                                            tmp_path):
  """Every leaf of create_model('se_resnet50_isqrt_d128', 1001) comes from
  the file (extra_class='keep' keeps the 1001-way head); float32 logits at
  64 px (M = 16) agree with the torch model's float64 ones to 1e-4 of the
  largest."""
  path = tmp_path / "se_resnet50.ckpt"
  write_mindspore_checkpoint(_mindspore_state(se_resnet50), path)
  model, template = _template("se_resnet50_isqrt_d128", 1001)
  variables, report = load_pretrained(path, template, extra_class="keep")
  assert not (report.not_loaded or report.missing or report.unexpected
              or report.mismatched)
  assert len(report.loaded) == len(jax.tree.leaves(template))
  assert set(report.skipped) == {"moments.conv1_0.weight", "learning_rate",
                                 "global_step"}
  assert any("shifted" in n for n in report.notes)
  for torch_bn, jax_bn in (("bn1", "stem/bn1_2"),
                           ("layer2.0.e2.1", "layer2/block0/bn2"),
                           ("layer2.0.down_sample_layer.2",
                            "layer2/block0/downsample_bn")):
    stats = se_resnet50.get_submodule(torch_bn).running_var.numpy()
    got_var = variables["batch_stats"]
    for key in jax_bn.split("/"):
      got_var = got_var[key]
    np.testing.assert_allclose(got_var["var"], stats + 9e-5, rtol=1e-6)
  assert any("padding='same'" in n for n in report.notes)
  images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(
      np.float32)
  got = np.asarray(jax.jit(lambda v, x: model.apply(v, x, False))(
      variables, images))
  with torch.no_grad():
    want = se_resnet50.double()(torch.from_numpy(
        images.transpose(0, 3, 1, 2)).double()).numpy()
  se_resnet50.float()
  scale = np.abs(want).max()
  assert scale > 1e-3
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)


def test_se_resnet_ckpt_mismatches_are_reported(tmp_path):
  """A width-8 SE-ResNet file without one squeeze-excite layer and with an
  unknown array: both reported; the default extra_class='last' fits a
  1000-class model."""
  torch.manual_seed(0)
  small = se_torch.SEResNet(1001, dim=16, width=8)
  state = _mindspore_state(small)
  path = tmp_path / "small.ckpt"
  write_mindspore_checkpoint(state, path)
  _, template = _template("se_resnet50_isqrt", 1000, width=8, dim=16)
  _, report = load_pretrained(path, template)
  assert not report.not_loaded
  assert "fc.weight[-1] (unused extra class)" in report.skipped
  del state["layer4.2.se_dense_1.weight"]
  state["layer4.2.se_dense_2.weight"] = np.zeros((4, 4), np.float32)
  write_mindspore_checkpoint(state, path)
  with pytest.raises(WeightMappingError, match=(
      r"(?s)missing in file \(1\): params/layer4/block2/se/se_dense_1/kernel"
      r".*unexpected in file \(1\): layer4\.2\.se_dense_2\.weight")):
    load_pretrained(path, template)
