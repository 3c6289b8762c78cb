"""Every training config loads, validates and builds (no data, no weights).

The recipes' key numbers are checked against docs/method.md §8.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax.data.config import DataSettings
from gcp_jax.models import build_model
from gcp_jax.train.loop import model_config
from gcp_jax.train.optim import create_optimizer
from gcp_jax.train.schedules import create_lr_schedule

CONFIGS = [
    ("default", None), ("imagenet_resnet", "resnet50_isqrt_d128,lrnorm"),
    ("imagenet_resnet", "resnet18_gap,lrfast"),
    ("imagenet_resnet", "resnet101_dropcov_d128,lradju"),
    ("imagenet_fmpn", "resnet50"), ("imagenet_fmpn", "resnet101"),
    ("imagenet_deit", "deit_s_dropcov"), ("imagenet_deit", "deit_t_cls"),
    ("imagenet_deit", "deit_drop_tiny_dropcov"),
    ("imagenet_deit", "deit_drop_small_dropcov"),
    ("imagenet_deit", "deit_drop_base_dropcov"),
    ("finetune_fmpn", "cub"), ("finetune_fmpn", "cars"),
    ("finetune_fmpn_vgg", "cub"),
    ("imagenet_mobile", "mobilenet_v2_isqrt,lrnorm"),
    ("imagenet_mobile", "mobilenet_v2_gap,lradju"),
    ("imagenet_mobile", "shufflenet_v2_isqrt,lrfast"),
]


def _load(name, arg):
  module = importlib.import_module(f"configs.{name}")
  return module.get_config() if arg is None else module.get_config(arg)


@pytest.mark.parametrize("name,arg", CONFIGS)
def test_config_builds(name, arg):
  config = _load(name, arg)
  DataSettings.from_config(config.data)
  model = build_model(model_config(config), 10)
  size = config.data.image_size
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), False))
  schedule = create_lr_schedule(config.schedule, config.learning_rate, 100,
                                config.num_epochs)
  tx = create_optimizer(config.optimizer, schedule)
  jax.eval_shape(tx.init, shapes["params"])   # rules match some params


def test_finetune_recipe_numbers():
  config = _load("finetune_fmpn", "cub")
  assert config.data.image_size == 448 and config.data.eval_views == 2
  assert config.data.global_batch_size == 10
  assert config.learning_rate == 1.2e-3
  assert config.optimizer.weight_decay == 1e-3
  assert tuple(config.optimizer.lr_multipliers) == (("head/fc/.*", 5.0),)
  assert config.num_epochs == 100
  assert tuple(config.init_from_ignore) == ("head/fc/.*",)


def test_finetune_vgg_recipe_numbers():
  """fast-MPN-COV finetune/finetune_mpncovvggd16.sh."""
  config = _load("finetune_fmpn_vgg", "aircraft")
  assert config.model.backbone == "vgg16_bn"
  assert (config.model.head, config.model.representation) == ("gcp", "isqrt")
  assert config.model.dim == 256 and config.model.num_iters == 5
  assert tuple(config.model.head_options.hidden_dims) == ()
  assert config.data.image_size == 448 and config.data.eval_views == 2
  assert config.data.global_batch_size == 10
  assert config.learning_rate == 3e-3 and config.num_epochs == 40
  assert tuple(config.schedule.milestones) == (20,)
  assert config.schedule.gamma == 0.1
  assert config.optimizer.weight_decay == 1e-4
  assert tuple(config.optimizer.lr_multipliers) == (("head/fc/.*", 20.0),)
  assert tuple(config.init_from_ignore) == ("head/fc/.*", "head/hidden.*")
  model = build_model(model_config(config), 200)
  params = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 448, 448, 3)), False))["params"]
  assert set(params["head"]) == {"reduce", "fc"}
  assert params["head"]["fc"]["kernel"].shape == (32896, 200)


def test_fmpn_and_deit_recipe_numbers():
  fmpn = _load("imagenet_fmpn", "resnet50")
  assert fmpn.data.global_batch_size == 160 and fmpn.num_epochs == 65
  assert tuple(fmpn.schedule.milestones) == (30, 45, 60)
  deit = _load("imagenet_deit", "deit_s_dropcov")
  assert deit.data.randaugment == "rand-m9-mstd0.5-inc1"
  assert (deit.data.mixup_alpha, deit.data.cutmix_alpha) == (0.8, 1.0)
  assert deit.data.random_erasing == 0.25
  assert deit.ema_decay == 0.99996 and deit.label_smoothing == 0.1
  assert deit.sync_bn  # the DeiT default, unchanged


@pytest.mark.parametrize("arg,batch,lr,wd", [
    ("deit_drop_tiny_dropcov", 1024, 1e-3, 0.03),
    ("deit_drop_small_dropcov", 1024, 1e-3, 0.03),
    ("deit_drop_base_dropcov", 512, 5e-4, 0.065)])
def test_deit_drop_recipes_are_the_reference_scripts(arg, batch, lr, wd):
  """DropCov Transformers/scripts/train_Deit_drop_*.sh: 8 x -b, --lr,
  --weight-decay; main.py defaults for the rest."""
  config = _load("imagenet_deit", arg)
  assert config.data.global_batch_size == batch
  assert (config.learning_rate, config.optimizer.weight_decay) == (lr, wd)
  assert config.num_epochs == 310 and config.schedule.warmup_epochs == 5
  assert config.model.backbone_options.drop_path_rate == 0.1
  assert config.model.backbone == arg[:-len("_dropcov")]
  assert not config.sync_bn


def test_unknown_arguments_are_named():
  with pytest.raises(ValueError, match="DATASET must be one of"):
    _load("finetune_fmpn", "flowers")
  with pytest.raises(ValueError, match="ARCH must be one of"):
    _load("imagenet_fmpn", "resnet18")


def test_nested_model_options_reach_the_head_as_options():
  """`model.representation_options` set in a config (a nested ConfigDict)
  arrives in the head as sorted (key, value) pairs, with `num_iters`."""
  from gcp_jax.train.loop import build_model
  config = _load("default", None)
  config.model.num_iters = 3
  config.model.representation_options = {"method": "eigh"}
  model = build_model(config, 10)
  assert model.head.representation_options == (("method", "eigh"),
                                               ("num_iters", 3))


ALL_SCHEDULED_CONFIGS = CONFIGS + [
    ("imagenet_resnet", f"resnet50_isqrt,{mode}")
    for mode in ("lrfast", "lradju")]


@pytest.mark.parametrize("name,arg", ALL_SCHEDULED_CONFIGS)
def test_no_config_trains_an_epoch_at_lr_zero(name, arg):
  config = _load(name, arg)
  steps_per_epoch = 10
  schedule = create_lr_schedule(config.schedule, config.learning_rate,
                                steps_per_epoch, config.num_epochs)
  lrs = jax.vmap(schedule)(jnp.arange(config.num_epochs * steps_per_epoch))
  per_epoch_max = np.asarray(lrs).reshape(config.num_epochs, -1).max(axis=1)
  assert np.all(per_epoch_max > 0), np.flatnonzero(per_epoch_max <= 0)


@pytest.mark.parametrize("mode,epochs,e_end,power", [
    ("lrfast", 30, 53, 11.0), ("lradju", 50, 50, 2.0)])
def test_imagenet_gcp_schedules_equal_the_reference(mode, epochs, e_end,
                                                    power):
  """GCP_Optimization's `adjust_learning_rate` (ResNets), transcribed:
  lr = args.lr * (1 - (epoch - e_start) / (e_end - e_start)) ** p with
  e_start = 1 and the 0-based epoch of its training loop."""
  config = _load("imagenet_resnet", f"resnet50_isqrt,{mode}")
  assert config.num_epochs == epochs and config.learning_rate == 0.1
  schedule = create_lr_schedule(config.schedule, config.learning_rate, 1,
                                epochs)
  got = np.asarray(jax.vmap(schedule)(jnp.arange(epochs)))
  want = [0.1 * (1 - (epoch - 1) / (e_end - 1)) ** power
          for epoch in range(epochs)]
  np.testing.assert_allclose(got, want, rtol=3e-6)


@pytest.mark.parametrize("arg,batch,lr,epochs", [
    ("mobilenet_v2_isqrt,lrnorm", 96, 0.045, 90),
    ("mobilenet_v2_gap,lrfast", 96, 0.06, 100),
    ("mobilenet_v2_isqrt_d128,lradju", 192, 0.06, 150),
    ("shufflenet_v2_isqrt,lrnorm", 1024, 0.5, 240),
    ("shufflenet_v2_gap,lrfast", 1024, 0.5, 60),
    ("shufflenet_v2_isqrt,lradju", 1024, 0.5, 100)])
def test_mobile_recipes_equal_the_reference(arg, batch, lr, epochs):
  """GCP_Optimization src/main.py (MobileNetV2) and src/main_shufflenet.py
  (ShuffleNetV2): batch, lr, epochs, weight decay 4e-5, and the per-epoch
  (MobileNetV2) or per-update (ShuffleNetV2) rate of their
  `adjust_learning_rate`, transcribed."""
  config = _load("imagenet_mobile", arg)
  assert (config.data.global_batch_size, config.learning_rate,
          config.num_epochs) == (batch, lr, epochs)
  assert config.optimizer.weight_decay == 4e-5
  assert config.optimizer.momentum == 0.9
  assert config.init_scheme == ("mobilenet_v2" if arg.startswith("mobilenet")
                                else "pytorch_default")
  # main_shufflenet.py: ColorJitter(brightness=0.4, contrast=0.4,
  # saturation=0.4) after RandomResizedCrop; main.py (MobileNetV2): none.
  assert tuple(config.data.color_jitter) == (
      (0.0, 0.0, 0.0) if arg.startswith("mobilenet") else (0.4, 0.4, 0.4))
  steps = 7
  schedule = create_lr_schedule(config.schedule, config.learning_rate, steps,
                                epochs)
  got = np.asarray(jax.vmap(schedule)(jnp.arange(epochs * steps)))
  mode = arg.split(",")[1]
  want = []
  for epoch in range(epochs):
    for i in range(steps):
      if arg.startswith("shufflenet"):
        want.append(lr * (1 - (epoch * steps + i) / (steps * epochs)))
      elif mode == "lrnorm":
        want.append(lr * 0.98**epoch)
      elif mode == "lrfast":
        want.append(lr * 0.92**epoch)
      elif epoch <= 50:
        want.append(lr - (lr - 0.01) / 50 * epoch)
      elif epoch <= 100:
        want.append(0.01 - (0.01 - 0.001) / 50 * (epoch - 50))
      else:
        want.append(0.001 - (0.001 - 0.00001) / 50 * (epoch - 100))
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=lr * 2e-7)


def test_mobile_config_names_its_choices():
  with pytest.raises(ValueError, match="ARCH in mobilenet_v2_gap"):
    _load("imagenet_mobile", "resnet50_isqrt,lrnorm")
  with pytest.raises(ValueError, match="MODE in lrnorm"):
    _load("imagenet_mobile", "shufflenet_v2_gap,lrslow")
