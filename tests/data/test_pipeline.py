"""create_datasets on image folders: process shares, exact padded
evaluation, deterministic and resumable epochs."""

import numpy as np
import pytest

from gcp_jax.data import pipeline
from tests.data.folders import (folder_config, image_ids, write_id_folder,
                                write_image)

NUM_TRAIN = {"cat": 20, "dog": 17, "eel": 13}  # 50 images, ids 0..49
NUM_VAL = {"cat": 9, "dog": 8, "eel": 6}       # 23 images, ids 50..72


@pytest.fixture(scope="module")
def id_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("ids")
  write_id_folder(str(root), NUM_TRAIN, NUM_VAL)
  return root


@pytest.fixture(scope="module")
def noise_folder(tmp_path_factory):
  """Random images of varied sizes, PNG and JPEG: augmentation shows."""
  root = tmp_path_factory.mktemp("noise")
  rng = np.random.default_rng(1)
  for split, count in (("train", 24), ("val", 5)):
    for i in range(count):
      shape = (int(rng.integers(18, 40)), int(rng.integers(18, 40)), 3)
      fmt = ("png", "jpeg")[i % 2]
      write_image(str(root / split / f"c{i % 3}" / f"{i}.{fmt.upper()}"),
                  rng.integers(0, 256, shape, dtype=np.uint8), fmt)
  return root


def test_info_and_shapes(id_folder):
  datasets = pipeline.create_datasets(folder_config(id_folder))
  assert datasets.info == pipeline.DatasetInfo(
      num_classes=3, num_train=50, num_eval=23,
      class_names=("cat", "dog", "eel"))
  assert datasets.steps_per_epoch() == 6
  batches = list(datasets.train_batches(0))
  assert len(batches) == 6
  assert batches[0]["image"].shape == (8, 16, 16, 3)
  assert batches[0]["image"].dtype == np.float32
  assert batches[0]["label"].dtype == np.int32
  assert set(batches[0]) == {"image", "label"}
  ids = image_ids(np.concatenate([b["image"] for b in batches]))
  labels = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(labels, (ids >= 20).astype(int)
                                + (ids >= 37))


def test_processes_share_an_epoch(id_folder):
  """3 processes, global batch 12: each step's local batches are disjoint,
  the epoch covers steps * 12 = 48 distinct training images, and a step's
  local batches side by side are bitwise the single-process batch (same
  order and augmentation for any process count)."""
  config = folder_config(id_folder, global_batch_size=12, eval_batch_size=3)
  per_process = []
  for p in range(3):
    datasets = pipeline.create_datasets(config, process_index=p,
                                        process_count=3)
    assert datasets.steps_per_epoch() == 4
    per_process.append(list(datasets.train_batches(2)))
  single = list(pipeline.create_datasets(config).train_batches(2))
  ids = []
  for step, local in zip(single, zip(*per_process)):
    assert all(len(b["label"]) == 4 for b in local)
    np.testing.assert_array_equal(
        step["image"], np.concatenate([b["image"] for b in local]))
    ids += list(image_ids(step["image"]))
  assert len(ids) == 48 and len(set(ids)) == 48
  assert set(ids) <= set(range(50))


def test_processes_evaluate_every_example_once(id_folder):
  """23 images, eval batch 6 over 3 processes (2 each): shares of 7, 8, 8
  give 4 batches on every process; the masked union is each id once."""
  config = folder_config(id_folder, global_batch_size=6, eval_batch_size=6)
  real_ids, counts = [], []
  for p in range(3):
    datasets = pipeline.create_datasets(config, process_index=p,
                                        process_count=3)
    batches = list(datasets.eval_batches())
    counts.append(len(batches))
    for b in batches:
      assert b["image"].shape == (2, 16, 16, 3)
      assert b["mask"].dtype == np.float32
      real = b["mask"] == 1.0
      assert (b["mask"][~real] == 0.0).all()
      assert (b["image"][~real] == 0.0).all()
      real_ids += list(image_ids(b["image"][real]))
  assert counts == [4, 4, 4]
  assert sorted(real_ids) == list(range(50, 73))


def test_single_process_eval_pads_last_batch(id_folder):
  datasets = pipeline.create_datasets(folder_config(id_folder,
                                                    eval_batch_size=10))
  batches = list(datasets.eval_batches())
  assert [b["mask"].sum() for b in batches] == [10, 10, 3]
  labels = np.concatenate([b["label"] for b in batches])[:23]
  np.testing.assert_array_equal(labels, [0] * 9 + [1] * 8 + [2] * 6)


def test_resume_mid_epoch_is_bitwise_identical(noise_folder):
  """A fresh pipeline started at step k yields exactly the tail."""
  config = folder_config(noise_folder, global_batch_size=6)
  full = list(pipeline.create_datasets(config).train_batches(3))
  assert len(full) == 4
  for k in (1, 3, 4):
    tail = list(pipeline.create_datasets(config).train_batches(3, k))
    assert len(tail) == 4 - k
    for a, b in zip(full[k:], tail):
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["label"], b["label"])


@pytest.mark.parametrize("augment", ["inception_crop", "resize_crop_flip"])
def test_epochs_and_seeds_change_the_batches(noise_folder, augment):
  config = folder_config(noise_folder, global_batch_size=6,
                         train_augment=augment)
  datasets = pipeline.create_datasets(config)
  first = next(datasets.train_batches(0))["image"]
  np.testing.assert_array_equal(first,
                                next(datasets.train_batches(0))["image"])
  assert not np.array_equal(first, next(datasets.train_batches(1))["image"])
  config.seed = 1
  other = pipeline.create_datasets(config)
  assert not np.array_equal(first, next(other.train_batches(0))["image"])


def test_same_image_augmented_differently_across_epochs(noise_folder):
  """Augmentation depends on the epoch, not only the order: with one
  batch holding the whole set, each image differs between epochs."""
  config = folder_config(noise_folder, global_batch_size=24,
                         train_augment="inception_crop")
  datasets = pipeline.create_datasets(config)
  images = [set(map(bytes, next(datasets.train_batches(e))["image"]))
            for e in (0, 1)]
  assert len(images[0]) == 24 and not images[0] & images[1]


def test_short_epochs_are_the_head_of_each_epochs_order(id_folder):
  """data.steps_per_epoch = 2: an epoch is the first 2 batches of the full
  pass of that epoch (same seed, same epoch), and the next epoch draws
  from a new order."""
  full = pipeline.create_datasets(folder_config(
      id_folder, train_augment="none"))
  short = pipeline.create_datasets(folder_config(
      id_folder, train_augment="none", steps_per_epoch=2))
  assert (full.steps_per_epoch(), short.steps_per_epoch()) == (6, 2)
  assert short.full_pass_steps() == 6
  for epoch in (0, 1):
    head = [image_ids(b["image"]) for b in full.train_batches(epoch)][:2]
    got = [image_ids(b["image"]) for b in short.train_batches(epoch)]
    assert len(got) == 2
    np.testing.assert_array_equal(np.stack(got), np.stack(head))
  assert not np.array_equal(
      image_ids(next(short.train_batches(0))["image"]),
      image_ids(next(short.train_batches(1))["image"]))
  assert [image_ids(b["image"]).tolist() for b in
          short.train_batches(0, 1)] == [got_0.tolist() for got_0 in [
              image_ids(list(short.train_batches(0))[1]["image"])]]


def test_cache_decoded_gives_the_same_batches(id_folder):
  config = folder_config(id_folder, train_augment="resize_crop_flip")
  plain = pipeline.create_datasets(config)
  config.cache_decoded = True
  cached = pipeline.create_datasets(config)
  for a, b in zip(plain.train_batches(1), cached.train_batches(1)):
    np.testing.assert_array_equal(a["image"], b["image"])
  for a, b in zip(plain.eval_batches(), cached.eval_batches()):
    np.testing.assert_array_equal(a["image"], b["image"])


def test_default_data_config_is_complete():
  config = pipeline.default_data_config()
  assert config.name == "digits" and config.crop_scale_min == 0.08
  assert config.train_augment == "inception_crop"
  assert not config.skip_corrupt and not config.cache_decoded


def test_process_without_eval_examples_still_pads(tmp_path):
  """2 eval images over 3 processes: process 0 owns none but yields the
  same single, fully masked batch as the others."""
  write_id_folder(str(tmp_path), {"a": 6}, {"a": 2})
  config = folder_config(tmp_path, global_batch_size=3, eval_batch_size=3)
  masks = []
  for p in range(3):
    batches = list(pipeline.create_datasets(
        config, process_index=p, process_count=3).eval_batches())
    assert len(batches) == 1
    masks.append(batches[0]["mask"].tolist())
  assert masks == [[0.0], [1.0], [1.0]]
