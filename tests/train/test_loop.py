"""train_and_evaluate / evaluate in process, on the embedded digits."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from gcp_jax.analysis import gradient_probe
from gcp_jax.data.config import DataError
from gcp_jax.data.pipeline import create_datasets
from gcp_jax.models import build_model
from gcp_jax.train import loop, reporting, restore
from gcp_jax.train.probe_hook import PROBE_FILE
from gcp_jax.train.checkpoint import CheckpointMismatchError
from gcp_jax.errors import ConfigError
from tests.train.tiny import tiny_config


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("digits_cache")


def _probed(config):
  """The config with the gradient probe every 7 in-epoch steps, 4 etas."""
  config.gradient_probe.every_steps = 7
  config.gradient_probe.num_etas = 4
  config.gradient_probe.eta_max = 1.6
  return config


@pytest.fixture(scope="module")
def trained(digits_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  config = _probed(tiny_config(digits_dir))
  return config, workdir, loop.train_and_evaluate(config, workdir)


def test_loss_decreases_and_beats_chance(trained):
  _, _, result = trained
  losses = [h["loss"] for h in result.history]
  # Seeds 0-4 of this run: last/first logged loss 0.072-0.095, eval top-1
  # 0.940-0.960 (tests/train/tiny.py); chance is 0.1.
  assert losses[-1] < 0.3 * losses[0]
  assert result.eval_metrics["top1"] > 0.8
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
  _, _, result = trained
  evals = reporting.read_metrics(workdir, "eval")
  assert [e["step"] for e in evals] == [21, 42]
  assert evals == [{k: float(v) if k != "step" else v
                    for k, v in e.items()} for e in result.eval_history]
  assert [t["step"] for t in reporting.read_metrics(workdir, "train")] == [
      h["step"] for h in result.history]


def test_eval_mode_reproduces_final_metrics_without_reinitialising(trained):
  config, workdir, result = trained
  metrics = restore.evaluate(config, workdir)
  for key in ("top1", "top5", "loss", "count"):
    assert metrics[key] == pytest.approx(result.eval_metrics[key], abs=1e-6)


def test_load_checkpoint_needs_no_data(trained, tmp_path):
  """The latest checkpoint (step 42) is restored with the data folder gone:
  classes and steps per epoch come from the checkpoint; the arrays are the
  trained state's. A config with another class count is refused."""
  _, workdir, result = trained
  config = tiny_config(tmp_path / "no_such_folder")
  config.data.name = "image_folder"
  model, state = restore.load_checkpoint(config, workdir)
  assert int(jax.device_get(state.step)) == 42
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(state.variables()),
               jax.device_get(result.state.variables()))
  logits = model.apply(jax.device_get(state.variables()),
                       np.zeros((1, 16, 16, 3), np.float32), False)
  assert logits.shape == (1, 10)
  config.num_classes = 7
  with pytest.raises(ConfigError, match="config.num_classes=7 but the "
                     "checkpoint in .* has 10 classes"):
    restore.load_checkpoint(config, workdir)


def test_resume_continues_from_saved_step(trained, digits_dir,
                                          tmp_path_factory):
  """Train 1 epoch, then ask for 2: the second run starts at step 21 and ends
  exactly where the uninterrupted run ended."""
  config, full_workdir, full = trained
  workdir = str(tmp_path_factory.mktemp("resume"))
  loop.train_and_evaluate(_probed(tiny_config(digits_dir, num_epochs=1)),
                          workdir)
  # A probe record past the last checkpoint, as after a kill: replaced.
  path = os.path.join(workdir, PROBE_FILE)
  records = gradient_probe.load_results(path)
  gradient_probe.save_results(
      records + [dataclasses.replace(records[-1], step=21, base_loss=-1.0)],
      path)
  resumed = loop.train_and_evaluate(config, workdir)
  assert resumed.history[0]["step"] == 28           # first log after 21
  np.testing.assert_allclose(resumed.eval_metrics["loss"],
                             full.eval_metrics["loss"], rtol=1e-5)
  assert resumed.eval_metrics["top1"] == full.eval_metrics["top1"]
  assert [e["step"] for e in reporting.read_metrics(workdir, "eval")] == [
      21, 42]
  want = gradient_probe.load_results(os.path.join(full_workdir, PROBE_FILE))
  got = gradient_probe.load_results(path)
  assert [r.step for r in got] == [r.step for r in want]
  for a, b in zip(got, want):
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5)
    np.testing.assert_allclose(a.base_loss, b.base_loss, rtol=1e-5)


def test_probe_records_pre_update_weights_on_the_step_batch(trained,
                                                            digits_dir):
  """Probes at in-epoch steps 0, 7, 14 of both epochs; step 0's L(X) is
  the loss of the initial weights on the first training batch with
  batch-statistics BN, computed here with a plain forward and numpy."""
  config, workdir, _ = trained
  records = gradient_probe.load_results(os.path.join(workdir, PROBE_FILE))
  assert [r.step for r in records] == [0, 7, 14, 21, 28, 35]
  assert all(r.bn_mode == "batch" and r.batch_size == 64 for r in records)
  np.testing.assert_allclose(records[0].etas, [0.1, 0.6, 1.1, 1.6])
  model = build_model(loop.model_config(config), 10)   # no device axis
  x = np.zeros((1, 16, 16, 3), np.float32)
  variables = model.init(jax.random.key(config.seed), x, False)
  batch = next(iter(create_datasets(config.data).train_batches(0)))
  logits, _ = model.apply(variables, batch["image"], True,
                          mutable=["batch_stats"])
  logits = np.asarray(logits, np.float64)
  log_p = logits - logits.max(-1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
  want = -log_p[np.arange(64), batch["label"]].mean()
  assert records[0].base_loss == pytest.approx(want, rel=1e-4)


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
  assert not list((tmp_path / "run").iterdir())   # nothing written in it


def test_an_incomplete_step_folder_is_named(digits_dir, tmp_path):
  (tmp_path / "checkpoints" / "5").mkdir(parents=True)
  with pytest.raises(CheckpointMismatchError,
                     match=r"checkpoints/5 is not a complete checkpoint.*"
                     r"Fix: move that folder"):
    loop.train_and_evaluate(tiny_config(digits_dir), str(tmp_path))
  assert os.listdir(tmp_path / "checkpoints") == ["5"]


def test_non_finite_loss_names_the_step(digits_dir, tmp_path):
  config = tiny_config(digits_dir, learning_rate=1e12, num_epochs=1)
  config.optimizer.weight_decay = 0.0
  with pytest.raises(loop.NonFiniteLossError, match=r"at step \d+"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_eval_without_checkpoint_is_an_error(digits_dir, tmp_path):
  with pytest.raises(restore.MissingCheckpointError, match="train first"):
    restore.evaluate(tiny_config(digits_dir), str(tmp_path))


def test_bfloat16_dropcov_training_keeps_float32_params_and_logs_rate(
    digits_dir, tmp_path):
  """bf16 backbone compute (one run also covers the DropCov rate log)."""
  config = tiny_config(digits_dir, model="resnet_tiny_dropcov",
                       half_precision=True, num_epochs=1)
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert all(p.dtype == np.float32
             for p in jax.tree.leaves(result.state.params))
  assert np.isfinite(result.history[-1]["loss"])
  assert result.history[-1]["loss"] < result.history[0]["loss"]
  rates = [h["dropcov_rate"] for h in result.history]
  assert rates and all(0.0 <= r <= 1.0 for r in rates)


def test_ema_is_evaluated_checkpointed_and_selects_best(digits_dir, tmp_path):
  config = tiny_config(digits_dir, num_epochs=1, ema_decay=0.5,
                       best_metric="ema_top1")
  workdir = str(tmp_path / "ema")
  result = loop.train_and_evaluate(config, workdir)
  final = result.eval_metrics
  assert 0.1 < final["ema_top1"] <= 1.0 and final["ema_top1"] != final["top1"]
  assert result.state.ema is not None
  again = restore.evaluate(config, workdir)
  for key in ("top1", "ema_top1", "ema_loss"):
    assert again[key] == pytest.approx(final[key], abs=1e-6)
  with pytest.raises(ConfigError, match="best_metric='ema_top1' needs"):
    loop.train_and_evaluate(tiny_config(digits_dir, best_metric="ema_top1"),
                            str(tmp_path / "bad"))
  assert not os.path.exists(str(tmp_path / "bad" / "checkpoints"))


def test_deit_recipe_pieces_train_together(digits_dir, tmp_path):
  """A tiny DeiT + DropCov with RandAugment, random erasing, mixup/CutMix,
  label smoothing and the weight EMA: trains, and reports both models."""
  config = tiny_config(digits_dir, model="deit_tiny_test_dropcov",
                       num_epochs=1, ema_decay=0.9, label_smoothing=0.1,
                       learning_rate=1e-3)
  config.data.image_size = 32
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 0.03
  config.data.randaugment = "rand-m9-mstd0.5-inc1"
  config.data.random_erasing = 0.25
  config.data.mixup_alpha = 0.8
  config.data.cutmix_alpha = 1.0
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert all(np.isfinite(h["loss"]) for h in result.history)
  assert result.history[-1]["loss"] < result.history[0]["loss"]
  assert {"top1", "ema_top1"} <= set(result.eval_metrics)
