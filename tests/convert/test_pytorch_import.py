"""PyTorch reference checkpoints -> gcp-jax: eval logits match the PyTorch
re-implementation of the references, and gcp-jax -> PyTorch -> gcp-jax is
exact."""

import jax
import numpy as np
import pytest

from gcp_jax import ops
from gcp_jax.convert import export_state_dict
from gcp_jax.convert import fit_checkpoint
from gcp_jax.convert import load_pretrained
from gcp_jax.convert import read_checkpoint
from gcp_jax.convert import WeightMappingError
from gcp_jax.convert import save_pytorch_checkpoint
from gcp_jax.models import create_model
from tests.convert import helpers

TINY = dict(width=8, small_input=True, dim=16)

# (torch arch, torch options, gcp-jax name, image size, classes)
CASES = {
    "tiny_isqrt": ("resnet_tiny", dict(TINY, head="isqrt"),
                   "resnet_tiny_isqrt", 16, 10),
    "resnet50_isqrt": ("resnet50", dict(head="isqrt"), "resnet50_isqrt", 64,
                       5),
    "resnet18_dropcov": ("resnet18", dict(head="dropcov"), "resnet18_dropcov",
                         64, 5),
    "tiny_gap": ("resnet_tiny", dict(TINY, head="gap"), "resnet_tiny_gap", 16,
                 10),
}


def _import(tref, tmp_path, case, seed=0):
  """Builds the torch model, saves it DataParallel-style, imports it."""
  arch, options, name, size, classes = CASES[case]
  torch_model = tref.randomize(tref.build(arch, classes, **options), seed)
  path = tmp_path / f"{case}.pth.tar"
  tref.save_data_parallel(torch_model, path)
  model, template = helpers.model_and_template(name, classes, size)
  variables, report = load_pretrained(path, template)
  return torch_model, model, template, variables, report


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_reference(tref, tmp_path, case):
  torch_model, model, template, variables, report = _import(tref, tmp_path,
                                                            case)
  images = helpers.random_images(CASES[case][3])
  helpers.assert_logits_close(helpers.jax_logits(model, variables, images),
                              tref.logits(torch_model, images))
  assert not report.not_loaded and not report.missing
  assert all(s.endswith("num_batches_tracked") for s in report.skipped)
  assert report.format == "pytorch"
  # the result has the template's structure, every leaf a numpy array
  assert (jax.tree_util.tree_structure(variables)
          == jax.tree_util.tree_structure(template))
  assert all(isinstance(v, np.ndarray) for v in jax.tree.leaves(variables))


def test_a_file_read_once_fits_twice(tref, tmp_path):
  """read_checkpoint needs no model, and fitting leaves the read arrays as
  they were: the same read file, fitted to an abstract and then to a
  concrete template, gives the reference's logits both times."""
  arch, options, name, size, classes = CASES["tiny_isqrt"]
  torch_model = tref.randomize(tref.build(arch, classes, **options), 0)
  path = tmp_path / "tiny.pth.tar"
  tref.save_data_parallel(torch_model, path)
  checkpoint = read_checkpoint(path)
  assert (checkpoint.path, checkpoint.format) == (str(path), "pytorch")
  model, template = helpers.model_and_template(name, classes, size)
  concrete = jax.tree.map(lambda t: np.zeros(t.shape, t.dtype), template)
  images = helpers.random_images(size)
  expected = tref.logits(torch_model, images)
  for target in (template, concrete):
    variables, report = fit_checkpoint(checkpoint, target)
    assert not report.not_loaded
    helpers.assert_logits_close(helpers.jax_logits(model, variables, images),
                                expected)


def test_dropcov_eca_kernel_orientation(tref, tmp_path):
  """The (1, 1, 3) Conv1d maps onto the (3,) kernel with the same
  cross-correlation direction (only training uses it)."""
  torch_model, _, _, variables, _ = _import(tref, tmp_path,
                                            "resnet18_dropcov")
  import torch  # pylint: disable=import-outside-toplevel
  feats = np.random.default_rng(1).normal(size=(2, 4, 4, 256)).astype(
      np.float32)
  kernel = variables["params"]["head"]["eca_conv"]
  ours = np.asarray(ops.channel_attention(feats, kernel))
  with torch.no_grad():
    theirs = torch_model.eca_layer(
        torch.from_numpy(feats.transpose(0, 3, 1, 2).copy())).numpy()
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("from_scratch", [False, True])
def test_fast_mpn_cov_newmodel_names(tref, tmp_path, from_scratch):
  """fast-MPN-COV main.py checkpoints (`features.module.<i>`,
  `representation.conv_dr_block`, `classifier`) give the same variables."""
  import torch  # pylint: disable=import-outside-toplevel
  arch, options, name, size, classes = CASES["tiny_isqrt"]
  torch_model = tref.randomize(tref.build(arch, classes, **options), 3)
  plain = tmp_path / "plain.pth"
  torch.save(torch_model.state_dict(), plain)
  newmodel = tmp_path / "newmodel.pth.tar"
  torch.save({"epoch": 1, "state_dict": tref.fmpn_newmodel_names(
      torch_model.state_dict(), from_scratch)}, newmodel)
  _, template = helpers.model_and_template(name, classes, size)
  expected, _ = load_pretrained(plain, template)
  actual, report = load_pretrained(newmodel, template)
  assert not report.not_loaded
  for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)


def test_round_trip_jax_pytorch_jax_is_exact(tref, tmp_path):
  """Random gcp-jax variables -> .pth (loads strictly into the reference
  model, same logits) -> gcp-jax, bit for bit."""
  import torch  # pylint: disable=import-outside-toplevel
  size, classes = 16, 7
  model = create_model("resnet_tiny_dropcov", classes)
  fresh = jax.jit(model.init, static_argnums=2)(
      jax.random.key(0), np.zeros((1, size, size, 3), np.float32), False)
  leaves, treedef = jax.tree.flatten(fresh)
  rng = np.random.default_rng(0)
  variables = jax.tree.unflatten(treedef, [
      np.asarray(v) + rng.uniform(0.1, 0.5, v.shape).astype(np.float32)
      for v in leaves])               # positive shift keeps variances > 0
  path = tmp_path / "exported.pth"
  save_pytorch_checkpoint(variables, path)

  state = torch.load(path, map_location="cpu", weights_only=True)
  torch_model = tref.build("resnet_tiny", classes, head="dropcov", **TINY)
  torch_model.load_state_dict(state, strict=True)
  assert {k: v.shape for k, v in state.items()} == {
      k: v.shape for k, v in torch_model.state_dict().items()}
  images = helpers.random_images(size)
  helpers.assert_logits_close(helpers.jax_logits(model, variables, images),
                              tref.logits(torch_model, images))

  back, report = load_pretrained(path, fresh)
  assert not report.not_loaded
  for (p, a), b in zip(helpers.flat(back).items(), jax.tree.leaves(variables)):
    assert a.dtype == b.dtype and a.shape == b.shape, p
    assert np.array_equal(a, b), p
  assert set(export_state_dict(variables)) == set(state)


@pytest.mark.parametrize("arch,head,name", [
    ("resnet18", "gap", "resnet18_gap"),
    ("resnet34", "isqrt", "resnet34_isqrt_d128"),
    ("resnet50", "dropcov", "resnet50_dropcov"),
    ("resnet101", "isqrt", "resnet101_isqrt"),
    ("resnet152", "gap", "resnet152_gap"),
])
def test_every_depth_maps_both_ways(tref, tmp_path, arch, head, name):
  """All reference names of ResNet-18..152 (GAP, GCP at d=128/256, DropCov)
  land on every gcp-jax leaf, and export gives back the same names and
  shapes (at width 8 to stay small)."""
  import torch  # pylint: disable=import-outside-toplevel
  dim = 128 if name.endswith("_d128") else 256
  torch_model = tref.build(arch, 10, head=head, width=8, dim=dim)
  path = tmp_path / f"{name}.pth"
  torch.save(torch_model.state_dict(), path)
  _, template = helpers.model_and_template(name, 10, 32, width=8)
  variables, report = load_pretrained(path, template)
  assert not report.not_loaded and not report.unexpected
  exported = export_state_dict(variables)
  assert {k: v.shape for k, v in exported.items()} == {
      k: tuple(v.shape) for k, v in torch_model.state_dict().items()}


def test_rename_and_bn_epsilon_options(tref, tmp_path):
  """`rename` fixes spellings the converter does not know; `bn_epsilon`
  folds a non-default BatchNorm epsilon into the variances."""
  import torch  # pylint: disable=import-outside-toplevel
  arch, options, name, size, classes = CASES["tiny_isqrt"]
  state = tref.randomize(tref.build(arch, classes, **options), 4).state_dict()
  plain, odd = tmp_path / "plain.pth", tmp_path / "odd.pth"
  torch.save(state, plain)
  torch.save({k.replace("layer_reduce_bn.", "dr.bn.").replace(
      "layer_reduce.", "dr.conv."): v for k, v in state.items()}, odd)
  _, template = helpers.model_and_template(name, classes, size)
  expected, _ = load_pretrained(plain, template)
  with pytest.raises(WeightMappingError, match=r"unexpected in file \(5\): "
                                               r"dr\.conv\.weight"):
    load_pretrained(odd, template)
  renamed, report = load_pretrained(
      odd, template, bn_epsilon=1e-3,
      rename=((r"^dr\.conv\.", "layer_reduce."), (r"^dr\.bn\.",
                                                  "layer_reduce_bn.")))
  assert not report.not_loaded
  for (path, a), b in zip(helpers.flat(renamed).items(),
                          jax.tree.leaves(expected)):
    if path.endswith("/var"):
      np.testing.assert_allclose(a, b + (1e-3 - 1e-5), rtol=1e-6)
    else:
      np.testing.assert_array_equal(a, b)


def test_triu_order_is_the_references(tref):
  """The FC ports 1:1 because both vectorise in the same order: row-major
  upper triangle with the diagonal (the non-zeros of ones(d, d).triu())."""
  import torch  # pylint: disable=import-outside-toplevel
  mat = np.arange(25, dtype=np.float32).reshape(1, 5, 5)
  ours = np.asarray(ops.triu_vec(mat))
  theirs = tref.triu(torch.from_numpy(mat)).numpy()
  np.testing.assert_array_equal(ours, theirs)
  np.testing.assert_array_equal(ours[0, :6], [0, 1, 2, 3, 4, 6])
