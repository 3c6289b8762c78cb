"""Clear errors (problem + fix) and the ignore path of load_pretrained."""

import argparse
import sys

import jax
import numpy as np
import pytest

from gcp_jax.convert import CheckpointFormatError
from gcp_jax.convert import ConvertOptionError
from gcp_jax.convert import MissingDependencyError
from gcp_jax.convert import WeightMappingError
from gcp_jax.convert import load_pretrained
from gcp_jax.convert import read_checkpoint
from gcp_jax.convert import naming
from gcp_jax.convert import write_mindspore_checkpoint
from gcp_jax.errors import GcpJaxError
from gcp_jax.models import create_model
from gcp_jax.models import layers
from tests.convert import helpers

SMALL = dict(width=8, dim=16)


def _torch_file(tref, tmp_path, arch="resnet18", classes=10, drop=(),
                **options):
  """A DataParallel .pth.tar of a small reference network."""
  import torch  # pylint: disable=import-outside-toplevel
  model = tref.build(arch, classes, **SMALL, **options)
  state = {f"module.{k}": v for k, v in model.state_dict().items()
           if not any(k.startswith(d) for d in drop)}
  path = tmp_path / f"{arch}.pth.tar"
  torch.save({"epoch": 3, "state_dict": state}, path)
  return path


def test_errors_are_gcp_jax_errors():
  for cls in (CheckpointFormatError, MissingDependencyError,
              WeightMappingError):
    assert issubclass(cls, GcpJaxError)


def test_bn_epsilon_constant_is_the_models():
  bn = layers.batch_norm(False, None, dtype=np.float32, name="bn")
  assert bn.epsilon == naming.GCP_JAX_BN_EPSILON


def test_wrong_architecture(tref, tmp_path):
  path = _torch_file(tref, tmp_path, "resnet18")
  _, template = helpers.model_and_template("resnet50_isqrt", 10, 32, **SMALL)
  with pytest.raises(WeightMappingError) as e:
    load_pretrained(path, template)
  message = str(e.value)
  assert message.startswith(f"Wrong architecture: {path}")
  assert "file:  ResNet-18 (BasicBlock 2-2-2-2, width 8" in message
  assert "model: ResNet-50 (Bottleneck 3-4-6-3, width 8" in message
  assert "missing in file (" in message and "... and" in message
  assert ("Fix: build the model the checkpoint was trained as, e.g. "
          "create_model('resnet18_isqrt', 10, dim=16, width=8)") in message


def test_dropcov_file_into_isqrt_model_is_wrong_architecture(tref, tmp_path):
  path = _torch_file(tref, tmp_path, head="dropcov")
  _, template = helpers.model_and_template("resnet18_isqrt", 10, 32, **SMALL)
  with pytest.raises(WeightMappingError,
                     match=r"(?s)Wrong architecture.*DropCov head d=16.*"
                           r"eca_layer\.conv\.weight -> params/head/eca_conv"):
    load_pretrained(path, template)


def test_missing_keys_fail_unless_ignored(tref, tmp_path):
  path = _torch_file(tref, tmp_path, "resnet_tiny", drop=("fc.",),
                     small_input=True)
  model = create_model("resnet_tiny_isqrt", 10)
  fresh = jax.jit(model.init, static_argnums=2)(
      jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32), False)
  with pytest.raises(WeightMappingError) as e:
    load_pretrained(path, fresh)
  message = str(e.value)
  assert message.startswith(f"{path} does not fit the model.")
  assert ("missing in file (2): params/head/fc/bias, params/head/fc/kernel"
          in message)
  assert "Fix:" in message and "ignore=" in message

  variables, report = load_pretrained(path, fresh, ignore=("head/fc/.*",))
  assert report.not_loaded == ("params/head/fc/bias", "params/head/fc/kernel")
  assert report.missing == report.not_loaded
  assert "NOT loaded, take from a fresh init (2)" in report.summary()
  # not-loaded leaves are the template's own (here its fresh init) ...
  np.testing.assert_array_equal(variables["params"]["head"]["fc"]["kernel"],
                                fresh["params"]["head"]["fc"]["kernel"])
  # ... and everything else comes from the file
  assert len(report.loaded) == len(jax.tree.leaves(fresh)) - 2


def test_new_classes_need_ignore_to_fine_tune(tref, tmp_path):
  path = _torch_file(tref, tmp_path, classes=10)
  _, template = helpers.model_and_template("resnet18_isqrt", 200, 32, **SMALL)
  with pytest.raises(WeightMappingError) as e:
    load_pretrained(path, template)
  message = str(e.value)
  assert ("shape mismatch (2): params/head/fc/bias: file (10,) vs model "
          "(200,)") in message
  assert ("Fix: to fine-tune on 200 classes, pass ignore=('head/fc/.*',)"
          in message)
  assert "build the model with 10 classes" in message

  variables, report = load_pretrained(path, template, ignore=("fc/.*",))
  assert report.not_loaded == ("params/head/fc/bias", "params/head/fc/kernel")
  # an abstract template leaves placeholders where nothing was loaded
  assert isinstance(variables["params"]["head"]["fc"]["kernel"],
                    jax.ShapeDtypeStruct)


def test_ignore_does_not_cover_other_problems(tref, tmp_path):
  path = _torch_file(tref, tmp_path, drop=("fc.", "layer_reduce_bn."))
  _, template = helpers.model_and_template("resnet18_isqrt", 10, 32, **SMALL)
  with pytest.raises(WeightMappingError) as e:
    load_pretrained(path, template, ignore=("head/fc/.*",))
  message = str(e.value)
  assert "not covered by ignore=('head/fc/.*',):" in message
  assert "missing in file (4): batch_stats/head/reduce/bn_reduce/mean" in (
      message)
  assert "params/head/fc" not in message


def test_truncated_pytorch_file(tref, tmp_path):
  path = _torch_file(tref, tmp_path)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  _, template = helpers.model_and_template("resnet18_isqrt", 10, 32, **SMALL)
  with pytest.raises(CheckpointFormatError,
                     match=f"{path} is truncated or corrupt.*Fix: download"):
    load_pretrained(path, template)
  with pytest.raises(CheckpointFormatError,   # no model needed to find out
                     match=f"{path} is truncated or corrupt"):
    read_checkpoint(path)


def test_truncated_mindspore_file(tmp_path):
  path = tmp_path / "resnet.ckpt"
  write_mindspore_checkpoint(
      {"conv1.weight": np.ones((8, 3, 3, 3), np.float32)}, path)
  path.write_bytes(path.read_bytes()[:-10])
  _, template = helpers.model_and_template("resnet_tiny_isqrt", 10, 16)
  with pytest.raises(CheckpointFormatError,
                     match=f"{path} is not a readable MindSpore checkpoint: "
                           f"the protobuf data is truncated or corrupt"):
    load_pretrained(path, template)


@pytest.mark.parametrize("kind", ["text", "npz", "empty", "absent"])
def test_unknown_format(tmp_path, kind):
  path = tmp_path / "weights.bin"
  if kind == "text":
    path.write_text("not a checkpoint\n")
  elif kind == "npz":
    path = tmp_path / "weights.npz"
    np.savez(path, a=np.ones(3))
  elif kind == "empty":
    path.write_bytes(b"")
  _, template = helpers.model_and_template("resnet_tiny_isqrt", 10, 16)
  expected = {
      "text": "unknown checkpoint format (a text file)",
      "npz": "unknown checkpoint format (a zip archive without data.pkl",
      "empty": "is empty",
      "absent": "no such file",
  }[kind]
  with pytest.raises(CheckpointFormatError) as e:
    load_pretrained(path, template)
  assert str(e.value).startswith(str(path))
  assert expected in str(e.value) and "Fix:" in str(e.value)


def test_pickled_objects_are_refused(tref, tmp_path):
  import torch  # pylint: disable=import-outside-toplevel
  path = tmp_path / "with_args.pth.tar"
  torch.save({"state_dict": {"fc.bias": torch.zeros(3)},
              "args": argparse.Namespace(lr=0.1)}, path)
  _, template = helpers.model_and_template("resnet_tiny_isqrt", 10, 16)
  with pytest.raises(CheckpointFormatError) as e:
    load_pretrained(path, template)
  assert "holds Python objects besides tensors" in str(e.value)
  assert "argparse.Namespace" in str(e.value)
  assert "weights_only=False" in str(e.value)


def test_numpy_scalars_in_metadata_are_fine(tref, tmp_path):
  import torch  # pylint: disable=import-outside-toplevel
  model = tref.build("resnet_tiny", 10, head="isqrt", small_input=True,
                     **SMALL)
  path = tmp_path / "np_meta.pth.tar"
  torch.save({"state_dict": model.state_dict(),
              "best_prec1": np.float64(70.5)}, path)
  _, template = helpers.model_and_template("resnet_tiny_isqrt", 10, 16)
  _, report = load_pretrained(path, template)
  assert not report.not_loaded


def test_torch_not_installed(tmp_path, monkeypatch):
  path = tmp_path / "model.pth"
  path.write_bytes(b"\x80\x02 pretend legacy torch pickle")
  monkeypatch.setitem(sys.modules, "torch", None)
  _, template = helpers.model_and_template("resnet_tiny_isqrt", 10, 16)
  with pytest.raises(MissingDependencyError,
                     match=r"needs PyTorch.*Fix: pip install torch==2\.13\.0"):
    load_pretrained(path, template)


def test_mindspore_extra_class_hints(tref, tmp_path):
  torch_model = tref.build("resnet_tiny", 1001, head="isqrt", width=8,
                           small_input=True, dim=16)
  state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  path = tmp_path / "tiny.ckpt"
  write_mindspore_checkpoint(
      tref.mindspore_names(state, np.random.default_rng(0)), path)
  _, template = helpers.model_and_template("resnet_tiny_isqrt", 1001, 16)
  with pytest.raises(WeightMappingError,
                     match=r'Fix: pass extra_class="keep" to keep all 1001 '
                           r'outputs \(extra_class="last" dropped one\)'):
    load_pretrained(path, template)
  _, template = helpers.model_and_template("resnet_tiny_isqrt", 1000, 16)
  with pytest.raises(WeightMappingError,
                     match=r'Fix: pass extra_class="last" \(MindSpore '
                           r'ImageNet heads have 1001 outputs'):
    load_pretrained(path, template, extra_class="keep")
  with pytest.raises(ConvertOptionError,
                     match=r"init_from_extra_class\) must be one of "
                           r"\('last', 'first', 'keep'\), got 'background'"):
    load_pretrained(path, template, extra_class="background")


def test_two_file_entries_for_one_leaf(tref, tmp_path):
  import torch  # pylint: disable=import-outside-toplevel
  state = tref.build("resnet_tiny", 10, head="isqrt", small_input=True,
                     **SMALL).state_dict()
  state["module.fc.bias"] = state["fc.bias"]
  path = tmp_path / "twice.pth"
  torch.save(state, path)
  _, template = helpers.model_and_template("resnet_tiny_isqrt", 10, 16)
  with pytest.raises(WeightMappingError,
                     match=r"unexpected in file \(1\): module\.fc\.bias "
                           r"\(duplicate of fc\.bias\) -> params/head/fc/bias"):
    load_pretrained(path, template)
