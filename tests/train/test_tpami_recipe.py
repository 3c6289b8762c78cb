"""configs/imagenet_tpami.py: the seed's schedule, smoothing targets and
decay mask against the seed's own formulas, and its 1001-way head loaded
from a MindSpore file and trained through the loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import imagenet_tpami
from configs.common import model_config
from gcp_jax.convert import export_state_dict, write_mindspore_checkpoint
from gcp_jax.data.digits import write_digits_image_folder
from gcp_jax.errors import ConfigError
from gcp_jax.models import create_model, layers
from gcp_jax.train import loop
from gcp_jax.train.config_check import check_training_config
from gcp_jax.train.optim import param_groups
from gcp_jax.train.pretrained import pretrained_variables, read_init_from
from gcp_jax.train.schedules import create_lr_schedule

STEPS_PER_EPOCH = 5004   # 1281167 // 256, as the seed's array assumes


def _seed_lr_array() -> np.ndarray:
  """The seed's train.py: 30 x 5004 steps at each of 0.1, 0.01, 0.001,
  0.0001, one value per global step."""
  return np.concatenate([np.full(30 * STEPS_PER_EPOCH, lr)
                         for lr in (0.10, 0.010, 0.0010, 0.00010)])


@pytest.mark.parametrize("arch", imagenet_tpami.ARCHS)
def test_schedule_is_the_seeds_per_step_array(arch):
  config = imagenet_tpami.get_config(arch)
  assert config.num_epochs == 100 and config.data.global_batch_size == 256
  schedule = create_lr_schedule(config.schedule, config.learning_rate,
                                STEPS_PER_EPOCH, config.num_epochs)
  seed = _seed_lr_array()
  steps = np.concatenate([
      np.arange(0, config.num_epochs * STEPS_PER_EPOCH, 997),
      [e * STEPS_PER_EPOCH + d for e in (30, 60, 90) for d in (-1, 0, 1)],
      [config.num_epochs * STEPS_PER_EPOCH - 1]])
  got = np.asarray(jax.vmap(schedule)(jnp.asarray(steps)))
  np.testing.assert_allclose(got, seed[steps], rtol=1e-6)


def test_loss_and_outputs_are_the_seeds():
  config = imagenet_tpami.get_config("resnet50_dropcov_d128")
  assert (config.label_smoothing, config.label_smoothing_style) == (
      0.1, "others")
  assert config.extra_outputs == 1 and config.init_from_extra_class == "keep"
  assert config.init_scheme == "mindspore" and config.half_precision
  assert config.model.backbone_options.padding == "same"
  assert "padding" not in imagenet_tpami.get_config(
      "resnet34_isqrt_d128").model.backbone_options
  for arch in imagenet_tpami.ARCHS:
    model = imagenet_tpami.get_config(arch).model
    assert model.backbone_options.bn_epsilon == "mindspore"
    assert model.head_options.bn_epsilon == 1e-4


@pytest.mark.parametrize("arch", ["resnet18_isqrt_d128",
                                  "resnet50_dropcov_d128"])
def test_batch_norm_epsilons_are_the_seeds(arch):
  """src/resnet.py: `_bn(c)` has eps 1e-4, `_bn(c, res_base=True)` 1e-5;
  ResNet-18/34 (res_base) use the latter for the stem's bn1 and the
  shortcuts' BN, ResNet-50 never; the head's layer_reduce_bn is
  `_bn(128)`."""
  config = imagenet_tpami.get_config(arch)
  model = loop.build_model(config, 1001)
  eps = layers.batch_norm_epsilons(model, 64)
  res_base = arch.startswith("resnet18")
  for path, value in eps.items():
    base = path == "stem/bn1" or path.endswith("downsample_bn")
    assert value == (1e-5 if res_base and base else 1e-4), path
  assert eps["head/reduce/bn_reduce"] == 1e-4
  assert len(eps) == (21 if res_base else 54)


def test_decay_mask_is_the_seeds_name_rule():
  """The seed decays a parameter unless its MindSpore name holds 'gamma',
  'beta' or 'bias' (BatchNorm scale / shift, dense biases). Here BN
  parameters are found from the model's batch_stats, independently of the
  optimiser's rule."""
  config = imagenet_tpami.get_config("resnet18_dropcov_d128")
  model = create_model("resnet18_dropcov_d128", 1001)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), False))
  bn_modules = {path[:-1] for path in traverse_util.flatten_dict(
      variables["batch_stats"])}
  flat = traverse_util.flatten_dict(variables["params"])
  expected = {path: not (path[:-1] in bn_modules or path[-1] == "bias")
              for path in flat}
  decay = traverse_util.flatten_dict(
      param_groups(variables["params"], config.optimizer).decay)
  assert decay == expected
  assert decay[("head", "eca_conv")]          # a Conv1d weight: decayed
  assert not decay[("head", "fc", "bias")]


def _tiny_recipe(tmp_path, num_train_steps: int):
  """The recipe on resnet_tiny and the digits (10 classes + 1 extra output),
  16 px, learning rates 0 (the state keeps its starting values)."""
  config = imagenet_tpami.get_config("resnet18_isqrt_d128")
  config.model = model_config("resnet_tiny_isqrt")
  config.model.backbone_options.bn_epsilon = "mindspore"   # the recipe's
  config.model.head_options.bn_epsilon = 1e-4
  config.data.name = "image_folder"
  config.data.data_dir = write_digits_image_folder(str(tmp_path / "digits"))
  config.data.update({"image_size": 16, "global_batch_size": 64,
                      "eval_batch_size": 64})
  config.num_train_steps = num_train_steps
  config.optimizer.lr_multipliers = ((".*", 0.0),)
  return config


def test_tiny_seed_recipe_loads_a_1001_way_file_and_trains(tmp_path):
  """The recipe shrunk to resnet_tiny on the digits (10 classes + 1 extra
  output): a MindSpore file with 11 outputs loads whole (its classifier
  included, "keep"), the model has 11 outputs and training runs."""
  tref = pytest.importorskip("tests.convert.reference_checkpoints")
  source = create_model("resnet_tiny_isqrt", 11).init(
      jax.random.key(5), jnp.zeros((1, 16, 16, 3)), False)
  path = str(tmp_path / "seed.ckpt")
  write_mindspore_checkpoint(tref.mindspore_names(
      export_state_dict(source), np.random.default_rng(0)), path)
  config = _tiny_recipe(tmp_path, num_train_steps=2)
  config.init_from = path
  # The file's epsilons (the seed's) are the model's: variances unshifted.
  imported, report = pretrained_variables(
      read_init_from(config), config, loop.build_model(config, 11), 16)
  assert not any("shifted" in note for note in report.notes)
  jax.tree.map(np.testing.assert_array_equal, imported["batch_stats"],
               jax.device_get(source["batch_stats"]))
  result = loop.train_and_evaluate(config, str(tmp_path / "run"))
  params = jax.device_get(result.state.params)
  assert params["head"]["fc"]["kernel"].shape == (136, 11)
  np.testing.assert_allclose(params["head"]["fc"]["kernel"],
                             source["params"]["head"]["fc"]["kernel"],
                             rtol=1e-6)
  assert result.eval_metrics["count"] == 450
  assert np.isfinite(result.history[-1]["loss"])


def test_mindspore_init_scheme_applies_to_fresh_training(tmp_path):
  """Without init_from, init_scheme="mindspore" draws the classifier as the
  seed: |w| <= 2 x 0.01 and zero bias (PyTorch's default would give
  U(-1/sqrt(136), 1/sqrt(136)) = +-0.086 and non-zero biases)."""
  config = _tiny_recipe(tmp_path, num_train_steps=1)
  result = loop.train_and_evaluate(config, str(tmp_path / "run"))
  fc = jax.device_get(result.state.params)["head"]["fc"]
  assert fc["kernel"].shape == (136, 11)
  assert np.abs(fc["kernel"]).max() <= 0.02 and not fc["bias"].any()


@pytest.mark.parametrize("changes,message", [
    ({"init_scheme": "xavier"},
     "config.init_scheme='xavier'; use one of 'module', 'mindspore'"),
    ({"label_smoothing_style": "mindspore"},
     "config.label_smoothing_style='mindspore'; use one of 'uniform'"),
    ({"extra_outputs": -1}, "config.extra_outputs=-1 must be >= 0"),
])
def test_recipe_fields_are_checked_before_anything_runs(changes, message):
  config = imagenet_tpami.get_config("resnet18_isqrt_d128")
  config.update(changes)
  with pytest.raises(ConfigError, match=message):
    check_training_config(config)


def test_others_smoothing_with_mixing_is_an_error():
  config = imagenet_tpami.get_config("resnet18_isqrt_d128")
  config.data.mixup_alpha = 0.8
  with pytest.raises(ConfigError, match="Mixup / CutMix smooth their "
                     "targets the 'uniform' way only"):
    check_training_config(config)
