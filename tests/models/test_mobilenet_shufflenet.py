"""MobileNetV2 and ShuffleNetV2 with GAP and GCP heads (GCP_Optimization).

Parameter counts against torchvision's published sizes and a count derived
by hand from the reference architecture; logits against the reference
PyTorch modules themselves (GCP_Optimization `src/models/*.py`, read from a
local mirror of the repository with `git show`, skipped without it), their
`torch.save(state_dict())` files imported with `gcp_jax.convert.
load_pretrained`, and the import's reports of files that do not fit; the
stem split, dropout, the ReLU6 reduction block and a training step.

The mirror is `$GCPO_REPO` (default: the workspace's mirror of
ZhangLi-CS/GCP_Optimization).
"""

import importlib
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from gcp_jax import backend, parallel
from gcp_jax.convert import (WeightMappingError, export_state_dict,
                             load_pretrained)
from gcp_jax.model_config import ModelConfig
from gcp_jax.models import build_model, create_model, heads
from gcp_jax.models.summary import count_params, summarize
from gcp_jax.train.optim import create_optimizer
from gcp_jax.train.schedules import create_lr_schedule
from gcp_jax.train.state import TrainState
from gcp_jax.train.steps import make_train_step

GCPO_REPO = os.environ.get(
    "GCPO_REPO", "/work/.mirror/ZhangLi-CS+GCP_Optimization/repo")
REFERENCE_FILES = ("MPNCOV", "utils", "MobileNetV2", "MobileNetV2_MPNCOV",
                   "MobileNetV2_MPNCOV_128", "ShuffleNetV2",
                   "ShuffleNetV2_MPNCOV")


def _abstract_params(model, size=224):
  return jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), False))["params"]


# --- parameter counts -------------------------------------------------------

# torchvision's documented sizes of the same networks (GAP, 1000 classes):
# mobilenet_v2 3,504,872; shufflenet_v2_x1_0 2,278,604.
TORCHVISION_PARAMS = {"mobilenet_v2_gap": 3_504_872,
                      "shufflenet_v2_gap": 2_278_604}


def _mobilenet_v2_count(head: str, dim: int, classes: int = 1000) -> int:
  """By hand from MobileNetV2.py: BN has 2 parameters per channel, convs
  and the 1x1 reduction no bias, the Linear a bias."""
  total = 3 * 9 * 32 + 2 * 32                          # stem
  cin = 32
  for t, c, n, _ in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                     (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                     (6, 320, 1, 1)):
    for _ in range(n):
      hidden = cin * t
      if t != 1:
        total += cin * hidden + 2 * hidden             # expand
      total += 9 * hidden + 2 * hidden                 # depthwise
      total += hidden * c + 2 * c                      # project
      cin = c
  total += 320 * 1280 + 2 * 1280                       # last 1x1 conv
  return total + _head_count(head, 1280, dim, classes)


def _shufflenet_v2_count(head: str, dim: int, classes: int = 1000) -> int:
  """By hand from ShuffleNetV2.py, 1.0x (24, 116, 232, 464, 1024)."""
  total = 3 * 9 * 24 + 2 * 24                          # conv1
  cin = 24
  for repeats, c in zip((4, 8, 4), (116, 232, 464)):
    h = c // 2
    # branch1: dw(cin) + BN, 1x1 cin -> h + BN; branch2: 1x1 cin -> h + BN,
    # dw(h) + BN, 1x1 h -> h + BN.
    total += (9 * cin + 2 * cin + cin * h + 2 * h
              + cin * h + 2 * h + 9 * h + 2 * h + h * h + 2 * h)
    # the other units: branch2 on h channels.
    total += (repeats - 1) * (h * h + 2 * h + 9 * h + 2 * h + h * h + 2 * h)
    cin = c
  total += 464 * 1024 + 2 * 1024                       # conv5
  return total + _head_count(head, 1024, dim, classes)


def _head_count(head: str, channels: int, dim: int, classes: int) -> int:
  if head == "gap":
    return channels * classes + classes
  triu = dim * (dim + 1) // 2
  return channels * dim + 2 * dim + triu * classes + classes


COUNTS = {
    "mobilenet_v2_gap": _mobilenet_v2_count("gap", 0),
    "mobilenet_v2_isqrt": _mobilenet_v2_count("gcp", 256),
    "mobilenet_v2_isqrt_d128": _mobilenet_v2_count("gcp", 128),
    "shufflenet_v2_gap": _shufflenet_v2_count("gap", 0),
    "shufflenet_v2_isqrt": _shufflenet_v2_count("gcp", 256),
}


def test_hand_counts_are_torchvisions():
  for name, count in TORCHVISION_PARAMS.items():
    assert COUNTS[name] == count, name


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_counts(name):
  params = _abstract_params(create_model(name, 1000))
  assert count_params(params) == COUNTS[name]


@pytest.mark.parametrize("name,mmacs", [
    ("mobilenet_v2_gap", 300),
    pytest.param("shufflenet_v2_gap", 146, marks=pytest.mark.slow)])
def test_multiply_adds_match_the_papers(name, mmacs):
  """Multiply-adds at 224 px: 300 M (MobileNetV2 paper, Table 4) and 146 M
  (ShuffleNetV2 paper, 1x), within 2%."""
  summary = summarize(create_model(name, 1000), 224)
  assert abs(summary.gmacs * 1e3 / mmacs - 1.0) <= 0.02


def test_fc_input_dims_and_map_size():
  """32896 / 8256 inputs of the GCP FC (the reference's Linear(32896) and
  Linear(8256)); every head sees the 7 x 7 map at 224 px."""
  for name, fc_in, channels in [("mobilenet_v2_isqrt", 32896, 1280),
                                ("mobilenet_v2_isqrt_d128", 8256, 1280),
                                ("mobilenet_v2_gap", 1280, 1280),
                                ("shufflenet_v2_isqrt", 32896, 1024),
                                ("shufflenet_v2_gap", 1024, 1024)]:
    model = create_model(name, 10)
    x = jnp.zeros((1, 224, 224, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x,
                                                  False))
    assert variables["params"]["head"]["fc"]["kernel"].shape == (fc_in, 10)
    _, state = jax.eval_shape(lambda v: model.apply(
        v, x, False, mutable=["intermediates"]), variables)
    assert state["intermediates"]["features_out"][0].shape == (1, 7, 7,
                                                               channels)


def test_last_stride_1_keeps_a_14x14_map():
  for backbone in ("mobilenet_v2", "shufflenet_v2"):
    model = build_model(ModelConfig(backbone, "gcp", backbone_options={
        "last_stride": 1}), 10)
    x = jnp.zeros((1, 224, 224, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x,
                                                  False))
    _, state = jax.eval_shape(lambda v: model.apply(
        v, x, False, mutable=["intermediates"]), variables)
    assert state["intermediates"]["features_out"][0].shape[1:3] == (14, 14)


# --- logits against the reference modules ----------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The reference's `models` package (the files above and an empty
  __init__), imported from a temporary folder."""
  torch = pytest.importorskip("torch")
  # One torch thread: its OpenMP pool and XLA's compete for the cores and
  # slow each other down tenfold.
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  root = tmp_path_factory.mktemp("gcpo")
  package = root / "models"
  package.mkdir()
  for name in REFERENCE_FILES:
    try:
      text = subprocess.run(
          ["git", "-C", GCPO_REPO, "show", f"HEAD:src/models/{name}.py"],
          check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
      pytest.skip(f"no GCP_Optimization mirror at {GCPO_REPO}")
    (package / f"{name}.py").write_text(text)
  (package / "__init__.py").write_text("")
  saved = {k: v for k, v in sys.modules.items()
           if k == "models" or k.startswith("models.")}
  for k in saved:
    del sys.modules[k]
  sys.path.insert(0, str(root))
  try:
    yield torch, {name: importlib.import_module(f"models.{name}")
                  for name in REFERENCE_FILES}
  finally:
    sys.path.remove(str(root))
    for k in [k for k in sys.modules
              if k == "models" or k.startswith("models.")]:
      del sys.modules[k]
    sys.modules.update(saved)
    torch.set_num_threads(threads)


def _build_reference(modules, name, classes):
  if name == "mobilenet_v2_gap":
    return modules["MobileNetV2"].mobilenet_v2(num_classes=classes)
  if name == "mobilenet_v2_isqrt":
    return modules["MobileNetV2_MPNCOV"].mobilenet_v2_mpncov(
        num_classes=classes)
  if name == "mobilenet_v2_isqrt_d128":
    return modules["MobileNetV2_MPNCOV_128"].mobilenet_v2_mpncov_128(
        num_classes=classes)
  if name == "shufflenet_v2_gap":
    return modules["ShuffleNetV2"].shufflenet_v2_x1_0(num_classes=classes)
  return modules["ShuffleNetV2_MPNCOV"].shufflenet_v2_mpncov_x1_0(
      num_classes=classes)


def _randomize(torch, model, seed):
  """Random BN affine parameters and running statistics, with biases large
  enough that ReLU6 clips; eval mode."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        for t, lo, hi in ((m.weight, 0.5, 1.5), (m.bias, -1.0, 5.0),
                          (m.running_mean, -0.2, 0.2),
                          (m.running_var, 0.5, 2.0)):
          t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=gen))
      elif isinstance(m, torch.nn.Linear):
        torch.nn.init.normal_(m.weight, 0.0, 0.05, generator=gen)
  return model.eval()


REFERENCE_NAMES = ["mobilenet_v2_gap", "mobilenet_v2_isqrt",
                   "mobilenet_v2_isqrt_d128", "shufflenet_v2_gap",
                   "shufflenet_v2_isqrt"]


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_parameter_count_is_the_references(reference, name):
  _, modules = reference
  ref = _build_reference(modules, name, 1000)
  ours = count_params(_abstract_params(create_model(name, 1000)))
  assert ours == sum(p.numel() for p in ref.parameters()) == COUNTS[name]


def _reference_and_ours(reference, name, path, images, seed=0, classes=10):
  """The randomised reference module and its `torch.save(state_dict())`
  file at `path` read by `load_pretrained` into the JAX model's variables
  (the GCP models' names with DataParallel's `module.` prefix)."""
  torch, modules = reference
  torch.manual_seed(seed)
  ref = _randomize(torch, _build_reference(modules, name, classes), seed)
  prefix = "module." if "isqrt" in name else ""
  torch.save({prefix + k: v for k, v in ref.state_dict().items()}, path)
  model = create_model(name, classes)
  template = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.asarray(images), False))
  variables, report = load_pretrained(path, template)
  assert not (report.not_loaded or report.missing or report.unexpected
              or report.mismatched)
  assert len(report.loaded) == len(jax.tree.leaves(template))
  assert report.file_architecture == (
      "MobileNetV2" if name.startswith("mobilenet") else "ShuffleNetV2")
  assert len(report.skipped) == sum(
      k.endswith("num_batches_tracked") for k in ref.state_dict())
  return torch, ref, variables


def _reference_logits(torch, ref, images):
  """The reference's eval-mode logits of NHWC images, computed in float64:
  its own float32 run of the GCP models is 1e-4 .. 3e-4 (relative) away
  from that at these weights (float32 Newton-Schulz on a rank-15
  covariance), the JAX float32 model about 1e-5."""
  x = torch.from_numpy(images.transpose(0, 3, 1, 2)).double()
  with torch.no_grad():
    return ref.double()(x).numpy()


# mobilenet_v2_isqrt_d128 differs from mobilenet_v2_isqrt only in d (its
# count is checked above): -m slow.
LOGIT_NAMES = [pytest.param(n, marks=pytest.mark.slow) if n.endswith("d128")
               else n for n in REFERENCE_NAMES]


@pytest.mark.parametrize("name", LOGIT_NAMES)
def test_logits_equal_the_reference(reference, name, tmp_path):
  """Eval mode, 112 px (a 4 x 4 map, M = 16): every JAX variable comes
  from the reference's state_dict file through `load_pretrained`, and the
  float32 JAX logits agree with the reference's to 1e-4 (relative to the
  largest logit). In the GCP models
  the randomised BN makes the reduction block's ReLU6 clip (outputs equal
  to 6), so the agreement checks the ReLU6."""
  model = create_model(name, 10)
  images = np.random.default_rng(1).standard_normal(
      (2, 112, 112, 3)).astype(np.float32)
  torch, ref, variables = _reference_and_ours(
      reference, name, tmp_path / f"{name}.pth", images)
  expected = jax.tree.map(lambda a: (a.shape, a.dtype), jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.asarray(images), False)))
  assert jax.tree.map(lambda a: (a.shape, a.dtype), variables) == expected
  want = _reference_logits(torch, ref, images)
  got, state = jax.jit(lambda v, x: model.apply(
      v, x, False, mutable=["intermediates"],
      capture_intermediates=lambda m, _: m.name == "reduce"))(
          variables, images)
  scale = np.abs(want).max()
  assert scale > 1e-3
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4,
                             atol=1e-4 * scale)
  if "isqrt" in name:
    reduced = state["intermediates"]["head"]["reduce"]["__call__"][0]
    assert np.any(np.asarray(reduced) == 6.0)
    # The GPU layers (`nn.Conv` for the 1 x 1 convolutions) compute the same
    # function from the same variables.
    with backend.assume("gpu"):
      gpu = jax.jit(lambda v, x: model.apply(v, x, False))(variables, images)
    np.testing.assert_allclose(np.asarray(gpu), want, rtol=1e-4,
                               atol=1e-4 * scale)


def test_unfitting_reference_files_are_reported(reference, tmp_path):
  """A GAP file for a GCP model (missing reduction, FC of another shape),
  a ShuffleNetV2 file for a MobileNetV2 model and an extra array each raise
  WeightMappingError naming the arrays; `ignore` accepts the extra one and
  the report lists it."""
  torch, modules = reference
  x = jnp.zeros((1, 64, 64, 3))

  def template(name):
    model = create_model(name, 10)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, False))

  def saved(name, extra=None):
    state = dict(_build_reference(modules, name, 10).state_dict())
    state.update(extra or {})
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    return path

  with pytest.raises(WeightMappingError, match=(
      r"(?s)does not fit this MobileNetV2 / ShuffleNetV2 model.*missing in "
      r"file \(5\): .*head/reduce/conv_reduce/kernel.*shape mismatch \(1\): "
      r"params/head/fc/kernel: file \(1280, 10\) vs model \(32896, 10\)")):
    load_pretrained(saved("mobilenet_v2_gap"), template("mobilenet_v2_isqrt"))
  with pytest.raises(WeightMappingError,
                     match=r"unexpected in file .*stage2\.0\.branch1\.0\."
                           r"weight -> params/stage2/unit0/branch1_dw/kernel"):
    load_pretrained(saved("shufflenet_v2_gap"), template("mobilenet_v2_gap"))
  extra = {"features.19.0.weight": torch.zeros(4, 4, 1, 1)}
  path = saved("mobilenet_v2_gap", extra)
  with pytest.raises(WeightMappingError, match=r"features\.19\.0\.weight"):
    load_pretrained(path, template("mobilenet_v2_gap"))
  _, report = load_pretrained(path, template("mobilenet_v2_gap"),
                              ignore=(r"features\.19\..*",))
  assert report.unexpected == ("features.19.0.weight",)
  assert not report.not_loaded
  assert report.file_architecture == "MobileNetV2"


def test_the_names_are_import_only():
  """The exporter writes fast-MPN-COV ResNet names only: a MobileNetV2's
  variables are refused; all but `head/fc` (a ResNet path too) have no
  exported name."""
  model = create_model("mobilenet_v2_gap", 10)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), False))
  with pytest.raises(WeightMappingError, match="^260 variables have no "
                     "fast-MPN-COV name"):
    export_state_dict(variables)


# --- heads, stem split, training --------------------------------------------

def test_dropout_is_pytorch_dropout_in_training_only():
  x = jnp.ones((4000,))
  module = heads.GAPHead(3, dropout_rate=0.2)
  out = module.apply({}, x, True, rngs={"dropout": jax.random.key(0)},
                     method=lambda m, v, t: heads.dropout(v, 0.2, t, m))
  kept = np.asarray(out) != 0
  assert abs(kept.mean() - 0.8) < 0.03
  np.testing.assert_allclose(np.asarray(out)[kept], 1 / 0.8, rtol=1e-6)
  same = module.apply({}, x, False,
                      method=lambda m, v, t: heads.dropout(v, 0.2, t, m))
  np.testing.assert_array_equal(same, x)
  with pytest.raises(ValueError, match="dropout_rate must be in"):
    heads.dropout(x, 1.0, False, module)
  with pytest.raises(ValueError, match="Unknown activation 'gelu'"):
    heads.check_activation("gelu")


TINY = {"mobilenet_v2": {"width_mult": 0.25},
        "shufflenet_v2": {"width_mult": 0.5}}


def _random_variables(model, x, seed=0):
  """Variables of `model` drawn without compiling its init (which takes
  seconds for these depths on a CPU): N(0, 0.3) params, positive BN
  variances."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, False))
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(shapes)
  out = {}
  for path, leaf in flat.items():
    value = 0.3 * rng.standard_normal(leaf.shape)
    if path[-1] == "var":
      value = 0.5 + rng.random(leaf.shape)
    out[path] = jnp.asarray(value, jnp.float32)
  return traverse_util.unflatten_dict(out)


@pytest.mark.parametrize("backbone", sorted(TINY))
def test_stem_split_equals_full_forward(backbone):
  model = build_model(ModelConfig(backbone, "gcp", dim=8,
                                  backbone_options=TINY[backbone]), 5)
  x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 64, 64, 3)),
                  jnp.float32)
  variables = _random_variables(model, x)
  apply = jax.jit(lambda v, x, method: model.apply(v, x, False,
                                                   method=method),
                  static_argnums=2)
  h = apply(variables, x, "stem")
  assert h.shape[1:3] == ((32, 32) if backbone == "mobilenet_v2"
                          else (16, 16))
  split = apply(variables, h, "from_stem")
  full = apply(variables, x, "__call__")
  assert np.ptp(np.asarray(full)) > 1e-3       # a 2 x 2 map: M = 4
  np.testing.assert_allclose(split, full, rtol=1e-6, atol=1e-7)


def test_training_forward_draws_dropout_and_updates_batch_statistics():
  """Training mode of a tiny MobileNetV2 GCP model (ReLU6 reduction,
  dropout 0.2): the 'dropout' stream changes the logits, the same key
  repeats them, and every BN's running statistics move."""
  model = build_model(ModelConfig("mobilenet_v2", "gcp", dim=8,
                                  backbone_options=TINY["mobilenet_v2"]), 5)
  assert (model.head.activation, model.head.dropout_rate) == ("relu6", 0.2)
  x = jnp.asarray(np.random.default_rng(3).standard_normal((4, 64, 64, 3)),
                  jnp.float32)
  variables = _random_variables(model, x)
  train = jax.jit(lambda key: model.apply(
      variables, x, True, rngs={"dropout": key}, mutable=["batch_stats"]))
  (a, state), (b, _), (c, _) = (train(jax.random.key(k)) for k in (1, 2, 1))
  assert not np.allclose(a, b) and np.array_equal(a, c)
  moved = jax.tree.map(lambda new, old: bool(np.any(np.asarray(new) != old)),
                       state["batch_stats"], variables["batch_stats"])
  assert all(jax.tree.leaves(moved))


@pytest.mark.slow
def test_mobilenet_trains_one_step():
  """One data-parallel SGD step (`gcp_jax.train.steps`) of the tiny model:
  finite loss, every convolution, the reduction and the FC move (BN biases
  followed by a linear layer and a training-mode BN have an exactly zero
  gradient). Compiling the step takes ~10-30 s on 2 CPU cores: -m slow."""
  model = build_model(ModelConfig("mobilenet_v2", "gcp", dim=8,
                                  backbone_options=TINY["mobilenet_v2"]), 5)
  x = np.random.default_rng(3).standard_normal((4, 64, 64, 3)).astype(
      np.float32)
  variables = _random_variables(model, jnp.asarray(x))
  schedule = create_lr_schedule(
      ml_collections.ConfigDict({"name": "constant"}), 0.1, 10, 1)
  tx = create_optimizer(ml_collections.ConfigDict(
      {"name": "sgd", "momentum": 0.9, "weight_decay": 4e-5}), schedule)
  state = TrainState.create(variables["params"], variables["batch_stats"], tx,
                            seed=0)
  mesh = parallel.create_mesh(1)
  step = make_train_step(model, tx, schedule, mesh)
  batch = {"image": x, "label": np.arange(4, dtype=np.int32) % 5}
  new, metrics = jax.device_get(step(parallel.replicate(mesh, state),
                                     parallel.host_batch_to_global(mesh,
                                                                   batch)))
  assert np.isfinite(metrics["loss_sum"])
  moved = traverse_util.flatten_dict(jax.tree.map(
      lambda a, b: bool(np.any(np.asarray(a) != b)), new.params,
      state.params), sep="/")
  assert all(v for k, v in moved.items() if k.endswith("kernel")), moved


# --- the references' initialisation (init_scheme) ---------------------------

def test_init_schemes_of_the_references():
  """"mobilenet_v2": FC ~ N(0, 0.01), zero FC bias, convolutions kept;
  "pytorch_default": every convolution U(-b, b), b = 1 / sqrt(k k C_in /
  groups) (depthwise: fan_in 9), the FC kept."""
  from gcp_jax.train.init_schemes import reinitialize
  model = create_model("mobilenet_v2_isqrt", 10)
  shapes = _abstract_params(model, 64)
  params = jax.tree.map(lambda a: np.full(a.shape, 0.5, a.dtype), shapes)
  mobile = traverse_util.flatten_dict(
      reinitialize(params, "mobilenet_v2", jax.random.key(0)), sep="/")
  fc = np.asarray(mobile["head/fc/kernel"])
  assert abs(fc.std() - 0.01) < 1e-4 and abs(fc.mean()) < 1e-4
  assert np.all(np.asarray(mobile["head/fc/bias"]) == 0)
  assert np.all(np.asarray(mobile["block3/depthwise/conv/kernel"]) == 0.5)
  torch_like = traverse_util.flatten_dict(
      reinitialize(params, "pytorch_default", jax.random.key(0)), sep="/")
  for path, fan_in in [("block3/depthwise/conv/kernel", 9),
                       ("block3/expand/conv/kernel", 24),
                       ("head/reduce/conv_reduce/kernel", 1280)]:
    kernel = np.asarray(torch_like[path])
    bound = fan_in ** -0.5
    assert np.abs(kernel).max() <= bound
    assert abs(kernel.std() - bound / 3**0.5) < 0.1 * bound
  assert np.all(np.asarray(torch_like["head/fc/kernel"]) == 0.5)
  assert np.all(np.asarray(torch_like["stem/bn/scale"]) == 0.5)
