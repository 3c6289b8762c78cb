"""Every kind of bad data or data config gives one DataError that names
the culprit and the fix; skip_corrupt skips and counts unreadable images."""

import os

import numpy as np
import pytest

from gcp_jax.data import pipeline
from gcp_jax.errors import GcpJaxError
from tests.data.folders import (folder_config, image_ids, write_id_folder,
                                write_image)


def _create(root, **overrides):
  return pipeline.create_datasets(folder_config(root, **overrides))


def _raises(match, root, **overrides):
  with pytest.raises(pipeline.DataError, match=match):
    _create(root, **overrides)


def test_data_error_is_a_value_error_and_a_user_error():
  assert issubclass(pipeline.DataError, ValueError)
  assert issubclass(pipeline.DataError, GcpJaxError)


def test_unknown_name_lists_the_valid_ones(tmp_path):
  _raises("Unknown data set data.name='mnist'; valid names: digits, "
          "image_folder, imagenet2012", tmp_path, name="mnist")


def test_bad_config_values(tmp_path):
  _raises(r"Unknown data config fields \['batch_size'\]", tmp_path,
          batch_size=8)
  _raises("Unknown data.train_augment='mixup'", tmp_path,
          train_augment="mixup")
  _raises("resize_size=10 is smaller than data.image_size=16", tmp_path,
          resize_size=10)
  _raises("needs data.data_dir", "")


def test_missing_folder(tmp_path):
  _raises(f"Image folder {tmp_path}/nope does not exist; set data.data_dir",
          tmp_path / "nope")


def test_missing_train_or_val(tmp_path):
  write_id_folder(str(tmp_path), {"a": 2}, {})
  _raises(f"{tmp_path}/val does not exist; an image folder needs the layout",
          tmp_path)
  os.rename(tmp_path / "train", tmp_path / "val")
  _raises(f"{tmp_path}/train does not exist", tmp_path)


def test_empty_split(tmp_path):
  write_id_folder(str(tmp_path), {}, {"a": 2})
  os.makedirs(tmp_path / "train")
  _raises(f"{tmp_path}/train is empty: it has no class folders", tmp_path)


def test_empty_class_folder_is_named(tmp_path):
  write_id_folder(str(tmp_path), {"a": 2, "b": 2}, {"a": 1, "b": 1})
  os.makedirs(tmp_path / "val" / "c")
  os.makedirs(tmp_path / "train" / "c")
  (tmp_path / "train" / "c" / "notes.txt").write_text("not an image")
  _raises(f"Class folder {tmp_path}/train/c has no images", tmp_path)


def test_val_class_missing_from_train(tmp_path):
  write_id_folder(str(tmp_path), {"a": 2, "b": 2}, {"a": 1, "zebra": 1})
  _raises(r"in val/ only: \['zebra'\], in train/ only: \['b'\]", tmp_path)


def test_batch_not_divisible_by_processes(tmp_path):
  write_id_folder(str(tmp_path), {"a": 9}, {"a": 3})
  with pytest.raises(pipeline.DataError,
                     match="global_batch_size=8 is not divisible by the 3 "
                           "processes; use a multiple of 3"):
    pipeline.create_datasets(folder_config(tmp_path), process_index=0,
                             process_count=3)


def test_batch_larger_than_training_set(tmp_path):
  write_id_folder(str(tmp_path), {"a": 3, "b": 2}, {"a": 1, "b": 1})
  _raises("global_batch_size=8 is larger than the 5 training examples",
          tmp_path)


def test_steps_per_epoch_beyond_one_pass(tmp_path):
  write_id_folder(str(tmp_path), {"a": 9, "b": 8}, {"a": 1, "b": 1})
  _raises(r"data.steps_per_epoch=3 is more than one pass over "
          r"'image_folder' \(2 batches of 8\); use at most 2", tmp_path,
          steps_per_epoch=3)
  _raises(r"data.steps_per_epoch=-1 must be >= 0", tmp_path,
          steps_per_epoch=-1)


def _write_corrupt_folder(root, bad_split):
  """8 train and 4 val id images, plus a truncated PNG in `bad_split`."""
  write_id_folder(str(root), {"a": 5, "b": 3}, {"a": 2, "b": 2})
  write_image(str(root / "x.png"), np.zeros((20, 16, 3), np.uint8))
  data = (root / "x.png").read_bytes()
  (root / bad_split / "b" / "broken.png").write_bytes(data[:len(data) // 2])
  os.remove(root / "x.png")


@pytest.mark.parametrize("cache_decoded", [False, True])
def test_corrupt_training_image_is_named(tmp_path, cache_decoded):
  _write_corrupt_folder(tmp_path, "train")
  message = f"Cannot decode image {tmp_path}/train/b/broken.png: .*PNG"
  with pytest.raises(pipeline.DataError, match=message + ".*skip_corrupt"):
    datasets = _create(tmp_path, global_batch_size=9,
                       cache_decoded=cache_decoded)
    list(datasets.train_batches(0))


def test_skip_corrupt_training_image(tmp_path):
  """The bad slot takes another image of its batch; a pipeline that has
  not met the file yet, started mid-epoch, gives the same batches."""
  _write_corrupt_folder(tmp_path, "train")
  config = dict(global_batch_size=3, skip_corrupt=True,
                train_augment="none")
  datasets = _create(tmp_path, **config)
  batches = list(datasets.train_batches(0))
  assert len(batches) == 3 and datasets.num_corrupt == 1
  assert list(datasets.corrupt_files) == [f"{tmp_path}/train/b/broken.png"]
  ids = np.concatenate([image_ids(b["image"]) for b in batches])
  assert len(set(ids)) == 8 and set(ids) <= set(range(8))
  for k in range(3):
    tail = list(_create(tmp_path, **config).train_batches(0, k))
    for a, b in zip(batches[k:], tail):
      np.testing.assert_array_equal(a["image"], b["image"])


def test_corrupt_eval_image(tmp_path):
  _write_corrupt_folder(tmp_path, "val")
  with pytest.raises(pipeline.DataError, match="val/b/broken.png"):
    list(_create(tmp_path, eval_batch_size=2).eval_batches())
  datasets = _create(tmp_path, eval_batch_size=2, skip_corrupt=True)
  batches = list(datasets.eval_batches())
  assert len(batches) == 3 and datasets.num_corrupt == 1
  masks = np.concatenate([b["mask"] for b in batches])
  ids = np.concatenate([image_ids(b["image"]) for b in batches])
  assert masks.sum() == 4
  assert sorted(ids[masks == 1]) == [8, 9, 10, 11]


def test_cache_decoded_skips_corrupt_ahead(tmp_path):
  _write_corrupt_folder(tmp_path, "val")
  datasets = _create(tmp_path, eval_batch_size=2, skip_corrupt=True,
                     cache_decoded=True)
  assert datasets.num_corrupt == 1
  masks = np.concatenate([b["mask"] for b in datasets.eval_batches()])
  assert masks.sum() == 4


def test_batch_of_only_corrupt_images(tmp_path):
  for i in range(2):
    os.makedirs(tmp_path / "train" / "a", exist_ok=True)
    (tmp_path / "train" / "a" / f"{i}.jpg").write_bytes(b"not an image")
  write_id_folder(str(tmp_path), {}, {"a": 1})
  datasets = _create(tmp_path, global_batch_size=2, skip_corrupt=True)
  with pytest.raises(pipeline.DataError, match="Every image of training batch "
                                               "0 is unreadable"):
    list(datasets.train_batches(0))
