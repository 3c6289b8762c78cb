"""Training and evaluation from an imported checkpoint (config.init_from)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import finetune_fmpn
from configs.common import model_config
from gcp_jax.convert import (CheckpointFormatError, WeightMappingError,
                             save_pytorch_checkpoint)
from gcp_jax.data.config import DataError
from gcp_jax.data.digits import write_digits_image_folder
from gcp_jax.models import create_model
from gcp_jax.train import loop, restore
from tests.train.tiny import tiny_config

pytest.importorskip("torch")


def _variables(num_classes: int, seed: int):
  model = create_model("resnet_tiny_isqrt", num_classes)
  return model.init(jax.random.key(seed), jnp.zeros((1, 16, 16, 3)), False)


def test_finetune_config_takes_the_backbone_and_a_fresh_classifier(tmp_path):
  """configs/finetune_fmpn.py shrunk to a tiny model, on the digits written
  as an image folder, from a 7-class file: every array but the classifier
  comes from the file, the classifier from config.seed's init (all LR
  multipliers 0, so the trained state still holds the initial values), and
  the 2-view evaluation counts every image once."""
  source = _variables(7, seed=123)
  path = str(tmp_path / "pretrained.pth")
  save_pytorch_checkpoint(source, path)
  config = finetune_fmpn.get_config("cub")
  config.model = model_config("resnet_tiny_isqrt")
  config.init_from = path
  config.data.data_dir = write_digits_image_folder(str(tmp_path / "digits"))
  config.data.update({"image_size": 16, "resize_size": 16,
                      "global_batch_size": 64, "eval_batch_size": 64})
  config.num_train_steps = 2
  config.optimizer.lr_multipliers = ((".*", 0.0),)
  result = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert result.eval_metrics["count"] == 450
  params = jax.device_get(result.state.params)
  fresh = jax.device_get(_variables(10, seed=config.seed)["params"])
  np.testing.assert_array_equal(params["stem"]["conv1"]["kernel"],
                                source["params"]["stem"]["conv1"]["kernel"])
  np.testing.assert_array_equal(
      params["head"]["reduce"]["conv_reduce"]["kernel"],
      source["params"]["head"]["reduce"]["conv_reduce"]["kernel"])
  np.testing.assert_array_equal(params["head"]["fc"]["kernel"],
                                fresh["head"]["fc"]["kernel"])


def test_without_ignore_a_new_class_count_is_an_error(tmp_path):
  path = str(tmp_path / "pretrained.pth")
  save_pytorch_checkpoint(_variables(7, seed=1), path)
  config = tiny_config(tmp_path / "digits", init_from=path)
  with pytest.raises(WeightMappingError, match="fc"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not list((tmp_path / "run").glob("checkpoints/*"))


def test_eval_refuses_arrays_missing_from_the_file(tmp_path):
  path = str(tmp_path / "pretrained.pth")
  save_pytorch_checkpoint(_variables(7, seed=1), path)
  config = tiny_config(tmp_path / "digits", init_from=path,
                       init_from_ignore=("head/fc/.*",))
  with pytest.raises(WeightMappingError, match="fine-tune first"):
    restore.evaluate(config, str(tmp_path / "run"))


@pytest.mark.parametrize("run", [loop.train_and_evaluate, restore.evaluate])
def test_an_unreadable_file_is_reported_before_the_data_is_read(tmp_path, run):
  """The init_from file is read before the data: with a text file for
  weights and a missing image folder, the file's error is the one raised.
  Control: without init_from the same config raises the folder's error."""
  bad = tmp_path / "model.pth"
  bad.write_text("not a checkpoint\n")
  config = tiny_config(tmp_path / "no_such_folder", init_from=str(bad))
  config.data.name = "image_folder"
  with pytest.raises(CheckpointFormatError, match="unknown checkpoint format"):
    run(config, str(tmp_path / "run"))
  config.init_from = ""
  with pytest.raises(DataError, match="no_such_folder does not exist"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
