"""train_and_evaluate / evaluate in process, on the embedded digits."""

import os

import jax
import numpy as np
import pytest

from gcp_jax.data.config import DataError
from gcp_jax.train import loop
from gcp_jax.train.checkpoint import CheckpointMismatchError
from gcp_jax.train.parallel import ConfigError
from tests.train.tiny import tiny_config


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("digits_cache")


@pytest.fixture(scope="module")
def trained(digits_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  config = tiny_config(digits_dir)
  return config, workdir, loop.train_and_evaluate(config, workdir)


def test_loss_decreases_and_beats_chance(trained):
  _, _, result = trained
  losses = [h["loss"] for h in result.history]
  assert losses[-1] < 0.7 * losses[0]
  assert result.eval_metrics["top1"] > 0.3          # chance is 0.1
  assert result.eval_metrics["count"] == 450        # every val digit once
  assert int(jax.device_get(result.state.step)) == 42


def test_checkpoints_config_and_tensorboard_written(trained):
  _, workdir, _ = trained
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
      "21", "42"]
  assert os.listdir(os.path.join(workdir, "best"))
  assert os.path.exists(os.path.join(workdir, "config.json"))
  assert os.listdir(os.path.join(workdir, "tensorboard", "train"))
  assert os.listdir(os.path.join(workdir, "tensorboard", "eval"))


def test_eval_mode_reproduces_final_metrics_without_reinitialising(trained):
  config, workdir, result = trained
  metrics = loop.evaluate(config, workdir)
  for key in ("top1", "top5", "loss", "count"):
    assert metrics[key] == pytest.approx(result.eval_metrics[key], abs=1e-6)


def test_resume_continues_from_saved_step(trained, digits_dir,
                                          tmp_path_factory):
  """Train 1 epoch, then ask for 2: the second run starts at step 21 and ends
  exactly where the uninterrupted run ended."""
  config, _, full = trained
  workdir = str(tmp_path_factory.mktemp("resume"))
  loop.train_and_evaluate(tiny_config(digits_dir, num_epochs=1), workdir)
  resumed = loop.train_and_evaluate(config, workdir)
  assert resumed.history[0]["step"] == 28           # first log after 21
  np.testing.assert_allclose(resumed.eval_metrics["loss"],
                             full.eval_metrics["loss"], rtol=1e-5)
  assert resumed.eval_metrics["top1"] == full.eval_metrics["top1"]


def test_other_architecture_checkpoint_is_refused_and_kept(trained,
                                                           digits_dir):
  _, workdir, _ = trained
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  config = tiny_config(digits_dir, model="resnet_tiny_gap")
  with pytest.raises(
      CheckpointMismatchError,
      match=r"(?s)unexpected in checkpoint.*params/head/reduce/conv_reduce/"
      r"kernel.*shape mismatch.*params/head/fc/kernel \(136, 10\) vs "
      r"\(64, 10\)"):
    loop.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before


def test_batch_not_divisible_by_devices(trained, digits_dir):
  _, workdir, _ = trained
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  config = tiny_config(digits_dir)
  config.data.global_batch_size = 30
  with pytest.raises(ConfigError, match="30 is not divisible by the 4 "
                     "devices.*e.g. 28 or 32"):
    loop.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before


def test_missing_data_directory(tmp_path):
  config = tiny_config(tmp_path)
  config.data.name = "image_folder"
  config.data.data_dir = str(tmp_path / "nope")
  with pytest.raises(DataError, match="nope"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))


def test_non_finite_loss_names_the_step(digits_dir, tmp_path):
  config = tiny_config(digits_dir, learning_rate=1e12, num_epochs=1)
  config.optimizer.weight_decay = 0.0
  with pytest.raises(loop.NonFiniteLossError, match=r"at step \d+"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_eval_without_checkpoint_is_an_error(digits_dir, tmp_path):
  with pytest.raises(loop.MissingCheckpointError, match="train first"):
    loop.evaluate(tiny_config(digits_dir), str(tmp_path))


def test_bfloat16_training_keeps_float32_params(digits_dir, tmp_path):
  config = tiny_config(digits_dir, half_precision=True, num_epochs=1)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert all(p.dtype == np.float32
             for p in jax.tree.leaves(result.state.params))
  assert np.isfinite(result.history[-1]["loss"])
  assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_dropcov_rate_is_logged(digits_dir, tmp_path):
  config = tiny_config(digits_dir, model="resnet_tiny_dropcov", num_epochs=1)
  result = loop.train_and_evaluate(config, str(tmp_path))
  rates = [h["dropcov_rate"] for h in result.history]
  assert all(0.0 <= r <= 1.0 for r in rates)


def test_ema_is_evaluated_checkpointed_and_selects_best(digits_dir, tmp_path):
  config = tiny_config(digits_dir, num_epochs=1, ema_decay=0.5,
                       best_metric="ema_top1")
  workdir = str(tmp_path / "ema")
  result = loop.train_and_evaluate(config, workdir)
  final = result.eval_metrics
  assert 0.1 < final["ema_top1"] <= 1.0 and final["ema_top1"] != final["top1"]
  assert result.state.ema is not None
  again = loop.evaluate(config, workdir)
  for key in ("top1", "ema_top1", "ema_loss"):
    assert again[key] == pytest.approx(final[key], abs=1e-6)
  with pytest.raises(ConfigError, match="best_metric='ema_top1' needs"):
    loop.train_and_evaluate(tiny_config(digits_dir, best_metric="ema_top1"),
                            str(tmp_path / "bad"))
  assert not os.path.exists(str(tmp_path / "bad" / "checkpoints"))
