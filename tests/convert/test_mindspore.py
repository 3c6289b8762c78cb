"""MindSpore .ckpt without MindSpore: the protobuf schema, the reader and
writer, and a MindSpore-named checkpoint whose logits match the PyTorch
reference of the same weights."""

import jax
import numpy as np
import pytest

from gcp_jax.convert import load_pretrained
from gcp_jax.convert import mindspore_files
from gcp_jax.convert import read_mindspore_checkpoint
from gcp_jax.convert import write_mindspore_checkpoint
from gcp_jax.models import layers
from tests.convert import helpers

TINY = dict(width=8, small_input=True, dim=16)


def test_schema_matches_checkpoint_proto_wire_format(tmp_path):
  """Field numbers and types of MindSpore's checkpoint.proto, byte by byte:
  Checkpoint.value = 1; Value.tag = 1, Value.tensor = 2; TensorProto.dims =
  1 (proto2 repeated int64, unpacked), tensor_type = 2, tensor_content = 3.
  """
  path = tmp_path / "one.ckpt"
  write_mindspore_checkpoint({"a": np.array([1, 2], np.int8)}, path)
  tensor = b"\x08\x02" + b"\x12\x04Int8" + b"\x1a\x02\x01\x02"
  value = b"\x0a\x01a" + b"\x12" + bytes([len(tensor)]) + tensor
  assert path.read_bytes() == b"\x0a" + bytes([len(value)]) + value


def test_write_read_round_trip_with_slices_and_scalars(tmp_path):
  rng = np.random.default_rng(0)
  tensors = {
      "layer_reduce.weight": rng.normal(size=(32, 3, 1, 1)).astype(
          np.float32),
      "half": rng.normal(size=(5, 2)).astype(np.float16),
      "learning_rate": np.array(0.1, np.float32),
      "global_step": np.array([7], np.int32),
      "flag": np.array([True, False]),
  }
  path = tmp_path / "sliced.ckpt"
  # 64-byte pieces: layer_reduce.weight (384 B) becomes 6 same-tag values
  write_mindspore_checkpoint(tensors, path, slice_bytes=64)
  message = mindspore_files.checkpoint_message_class()()
  message.ParseFromString(path.read_bytes())
  tags = [v.tag for v in message.value]
  assert tags.count("layer_reduce.weight") == 6
  assert list(message.value[tags.index("learning_rate")].tensor.dims) == [0]
  read = read_mindspore_checkpoint(path)
  assert list(read) == list(tensors)
  for name, array in tensors.items():
    assert read[name].dtype == array.dtype and read[name].shape == array.shape
    np.testing.assert_array_equal(read[name], array)


@pytest.mark.parametrize("extra_class", ["last", "first", "keep"])
def test_mindspore_checkpoint_logits_match_reference(tref, tmp_path,
                                                     extra_class):
  """A 1001-class MindSpore-named BasicBlock network with MindSpore's BN
  epsilons (1e-4, 1e-5 on stem and shortcuts) and optimizer state; the
  1001st output dropped at the end (the seed's image-folder labels), at the
  start (a background class) or kept."""
  size = 16
  torch_model = tref.randomize(
      tref.build("resnet_tiny", 1001, head="isqrt",
                 bn_eps=tref.mindspore_bn_eps, **TINY), 5)
  state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  path = tmp_path / "resnet-100_5004.ckpt"
  write_mindspore_checkpoint(
      tref.mindspore_names(state, np.random.default_rng(0)), path)

  classes = 1001 if extra_class == "keep" else 1000
  model, template = helpers.model_and_template("resnet_tiny_isqrt", classes,
                                               size)
  variables, report = load_pretrained(path, template,
                                      extra_class=extra_class)
  images = helpers.random_images(size)
  expected = tref.logits(torch_model, images)
  expected = {"last": expected[:, :-1], "first": expected[:, 1:],
              "keep": expected}[extra_class]
  helpers.assert_logits_close(helpers.jax_logits(model, variables, images),
                              expected)
  assert report.format == "mindspore" and not report.not_loaded
  assert {"learning_rate", "global_step", "momentum",
          "moments.conv1.weight", "moments.end_point.weight"} <= set(
              report.skipped)
  assert any("BatchNorm variances shifted" in n for n in report.notes)


def test_a_model_with_the_seeds_epsilons_loads_unshifted(tref, tmp_path):
  """The seed's BasicBlock net (BN epsilon 1e-4, 1e-5 on the stem and the
  shortcuts, 1e-4 in the head) with running variances of 1e-5..3e-4, where
  the epsilon matters. gcp-jax with bn_epsilon='mindspore' and a head BN
  epsilon of 1e-4 has the same epsilons, loads the variances unshifted and
  gives the reference logits; the default model (1e-5) gives them too,
  through the shift; the seed's model without `model_bn_epsilons` (shifted
  and normalised with 1e-4: epsilon counted twice) does not."""
  import torch  # pylint: disable=import-outside-toplevel
  size = 16
  torch_model = tref.randomize(
      tref.build("resnet_tiny", 1001, head="isqrt",
                 bn_eps=tref.mindspore_bn_eps, **TINY), 8)
  generator = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for module in torch_model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_var.uniform_(1e-5, 3e-4, generator=generator)
  eps = sorted(m.eps for m in torch_model.modules()
               if isinstance(m, torch.nn.BatchNorm2d))
  state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  path = tmp_path / "seed.ckpt"
  write_mindspore_checkpoint(
      tref.mindspore_names(state, np.random.default_rng(3)), path)
  images = helpers.random_images(size)
  expected = tref.logits(torch_model, images)
  seed_eps = dict(bn_epsilon="mindspore", head_options={"bn_epsilon": 1e-4})

  def error(model_bn_epsilons, **overrides):
    model, template = helpers.model_and_template(
        "resnet_tiny_isqrt", 1001, size, **TINY, **overrides)
    if model_bn_epsilons:
      model_bn_epsilons = layers.batch_norm_epsilons(model, size)
      assert sorted(model_bn_epsilons.values()) == pytest.approx(
          eps if overrides else [1e-5] * len(eps))
    variables, report = load_pretrained(
        path, template, extra_class="keep",
        model_bn_epsilons=model_bn_epsilons)
    got = helpers.jax_logits(model, variables, images)
    shifted = any("variances shifted" in n for n in report.notes)
    return np.abs(got - expected).max() / np.abs(expected).max(), shifted

  assert error(True, **seed_eps) <= (helpers.RELATIVE_TOLERANCE, False)
  tolerance, shifted = error(True)
  assert tolerance <= helpers.RELATIVE_TOLERANCE and shifted
  assert error(False, **seed_eps)[0] > 100 * helpers.RELATIVE_TOLERANCE


def test_mindspore_bottleneck_names_and_epsilon(tref, tmp_path):
  """ResNet-50 model-zoo names (bn1..3, down_sample_layer, end_point) give
  the PyTorch import's arrays; every BN variance gains 1e-4 - 1e-5."""
  import torch  # pylint: disable=import-outside-toplevel
  torch_model = tref.randomize(
      tref.build("resnet50", 1001, head="isqrt", width=8, dim=16), 6)
  state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  ms_path, pt_path = tmp_path / "r50.ckpt", tmp_path / "r50.pth"
  write_mindspore_checkpoint(
      tref.mindspore_names(state, np.random.default_rng(1)), ms_path)
  torch.save(torch_model.state_dict(), pt_path)
  _, template = helpers.model_and_template("resnet50_isqrt", 1001, 16,
                                           width=8, dim=16)
  from_ms, report = load_pretrained(ms_path, template,
                                    extra_class="keep")
  from_pt, _ = load_pretrained(pt_path, template)
  assert any("asymmetrically" in n for n in report.notes)
  for (path, a), b in zip(helpers.flat(from_ms).items(),
                          jax.tree.leaves(from_pt)):
    if path.endswith("/var"):
      np.testing.assert_allclose(a, b + 9e-5, rtol=1e-6, err_msg=path)
    else:
      np.testing.assert_array_equal(a, b, err_msg=path)


@pytest.mark.parametrize("size", [64, 66])
def test_mindspore_resnet50_logits_match_with_same_padding(tref, tmp_path,
                                                           size):
  """The seed's Bottleneck ResNets pad 'same' (MindSpore pad_mode='same'):
  with `padding='same'` gcp-jax computes their logits (against a torch
  re-implementation of that padding); with PyTorch padding it does not."""
  torch_model = tref.randomize(
      tref.build("resnet50", 1001, head="isqrt", width=8, dim=16,
                 bn_eps=lambda name: 1e-4, padding="same"), 7)
  state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  path = tmp_path / "resnet50.ckpt"
  write_mindspore_checkpoint(
      tref.mindspore_names(state, np.random.default_rng(2)), path)
  images = helpers.random_images(size)
  expected = tref.logits(torch_model, images)
  errors = {}
  for padding in ("same", "pytorch"):
    model, template = helpers.model_and_template(
        "resnet50_isqrt", 1001, size, width=8, dim=16, padding=padding)
    variables, _ = load_pretrained(path, template,
                                   extra_class="keep")
    got = helpers.jax_logits(model, variables, images)
    errors[padding] = np.abs(got - expected).max() / np.abs(expected).max()
  assert errors["same"] <= helpers.RELATIVE_TOLERANCE, errors
  assert errors["pytorch"] > 100 * helpers.RELATIVE_TOLERANCE, errors


def test_training_demands_same_padding_for_mindspore_bottlenecks(tref,
                                                                 tmp_path):
  """`check_padding` (run by the training loop and evaluation before
  anything is written): a MindSpore Bottleneck file needs padding='same';
  BasicBlock files and PyTorch files need nothing."""
  from gcp_jax.convert import WeightMappingError, read_checkpoint
  from gcp_jax.models import create_model
  from gcp_jax.train.pretrained import check_padding
  files = {}
  for arch, options in (("resnet50", dict(width=8, dim=16)),
                        ("resnet_tiny", TINY)):
    state = {k: v.numpy() for k, v in tref.build(
        arch, 1001, head="isqrt", **options).state_dict().items()}
    files[arch] = tmp_path / f"{arch}.ckpt"
    write_mindspore_checkpoint(
        tref.mindspore_names(state, np.random.default_rng(0)), files[arch])
  resnet50 = read_checkpoint(files["resnet50"])
  with pytest.raises(WeightMappingError,
                     match="MindSpore Bottleneck ResNet.*padding='same'"):
    check_padding(resnet50, create_model("resnet50_isqrt", 1000))
  check_padding(resnet50, create_model("resnet50_isqrt", 1000,
                                       padding="same"))
  check_padding(read_checkpoint(files["resnet_tiny"]),
                create_model("resnet_tiny_isqrt", 1000))
  with pytest.raises(ValueError, match="Unknown padding 'SAME'.*'same'"):
    create_model("resnet50_isqrt", 10, padding="SAME").init(
        jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32), False)
