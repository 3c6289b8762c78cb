"""The digits PNG cache and the tensorflow-datasets (imagenet2012) path.

imagenet2012 runs on `tfds.testing.mock_data`: its metadata is not shipped
with tfds, so the test writes it from the builder's own code (feature
spec, 1000 label names) plus split sizes; nothing is downloaded.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from gcp_jax.data import digits, pipeline, preprocess


def _digits_config(root, **overrides):
  config = pipeline.default_data_config()
  config.data_dir = str(root)
  config.update(overrides)
  return config


def _mtimes(root):
  return {os.path.join(parent, name): os.stat(os.path.join(parent,
                                                           name)).st_mtime_ns
          for parent, dirs, files in os.walk(root) for name in dirs + files}


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("cache") / "digits"
  datasets = pipeline.create_datasets(_digits_config(root))
  assert datasets.info.num_train == 1347 and datasets.info.num_eval == 450
  assert datasets.info.class_names == tuple("0123456789")
  return root


def test_digits_layout_and_counts(digits_root):
  for split, total in (("train", 1347), ("val", 450)):
    assert sorted(os.listdir(digits_root / split)) == list("0123456789")
    files = [f for c in "0123456789"
             for f in os.listdir(digits_root / split / c)]
    assert len(files) == total and all(f.endswith(".png") for f in files)
  assert os.listdir(digits_root.parent) == ["digits"]  # no temporary left


def test_digits_cache_written_once(digits_root):
  before = _mtimes(digits_root)
  pipeline.create_datasets(_digits_config(digits_root))
  assert _mtimes(digits_root) == before


def test_digits_pixels_survive_png_and_the_pipeline(digits_root):
  """Files hold round(255 * pixel) exactly; the eval pipeline at 8 px
  returns them normalised, in file order (class, then index)."""
  split = digits.load_digits_split()
  expected = np.round(split.test_images[..., 0] * 255.0)
  order = [(c, int(f[:4])) for c in "0123456789"
           for f in sorted(os.listdir(digits_root / "val" / c))]
  for c, i in order[::37]:
    image = preprocess.decode_image(tf.io.read_file(
        str(digits_root / "val" / c / f"{i:04d}.png"))).numpy()
    for k in range(3):
      np.testing.assert_array_equal(image[..., k], expected[i])
    assert split.test_labels[i] == int(c)
  datasets = pipeline.create_datasets(_digits_config(
      digits_root, image_size=8, resize_size=8, eval_batch_size=100))
  batches = list(datasets.eval_batches())
  images = np.concatenate([b["image"] for b in batches])[:450]
  pixels = (images * preprocess.STDDEV_RGB + preprocess.MEAN_RGB) * 255.0
  indices = [i for _, i in order]
  np.testing.assert_allclose(pixels[..., 1], expected[indices], atol=1e-3)
  np.testing.assert_array_equal(
      np.concatenate([b["label"] for b in batches])[:450],
      split.test_labels[indices])


def test_interrupted_digits_write_leaves_nothing(tmp_path, monkeypatch):
  calls = []

  def failing_encode(image):
    calls.append(1)
    if len(calls) > 100:
      raise KeyboardInterrupt
    return tf.constant(b"")

  monkeypatch.setattr(tf.io, "encode_png", failing_encode)
  with pytest.raises(KeyboardInterrupt):
    digits.write_digits_image_folder(str(tmp_path / "digits"))
  assert os.listdir(tmp_path) == []


def _mock_imagenet(data_dir, num_examples):
  """Writes imagenet2012 metadata with `num_examples` per split."""
  builder = tfds.builder("imagenet2012", data_dir=str(data_dir))
  template = tfds.core.ShardedFileTemplate(
      data_dir=builder.data_dir, dataset_name="imagenet2012",
      filetype_suffix="tfrecord", split="train")
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=s, shard_lengths=[num_examples], num_bytes=0,
                          filename_template=template.replace(split=s))
      for s in ("train", "validation")]))
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)
  return tfds.testing.mock_data(num_examples=num_examples,
                                policy=tfds.testing.MockPolicy.USE_FILES,
                                data_dir=str(data_dir))


def test_imagenet2012_on_mock_data(tmp_path):
  """Random JPEGs of the mock go through decode + augmentation; resume and
  padded evaluation behave as for image folders (one process: the mock
  ignores split slices)."""
  config = pipeline.default_data_config()
  config.update(name="imagenet2012", data_dir=str(tmp_path),
                   image_size=16, global_batch_size=4, eval_batch_size=6,
                   shuffle_buffer=8)
  with _mock_imagenet(tmp_path, num_examples=10):
    datasets = pipeline.create_datasets(config)
    assert datasets.info.num_classes == 1000
    assert datasets.info.class_names[0] == "n01440764"
    assert (datasets.info.num_train, datasets.info.num_eval) == (10, 10)
    full = list(datasets.train_batches(1))
    tail = list(pipeline.create_datasets(config).train_batches(1, 1))
    evaluation = list(datasets.eval_batches())
  assert len(full) == 2 and full[0]["image"].shape == (4, 16, 16, 3)
  np.testing.assert_array_equal(full[1]["image"], tail[0]["image"])
  np.testing.assert_array_equal(full[1]["label"], tail[0]["label"])
  assert [b["mask"].sum() for b in evaluation] == [6, 4]


def test_imagenet2012_missing_says_how_to_prepare_it(tmp_path):
  config = pipeline.default_data_config()
  config.update(name="imagenet2012", data_dir=str(tmp_path))
  message = (f"not prepared in {tmp_path}.*into {tmp_path}/downloads/manual/"
             f" and run `tfds build imagenet2012 --data_dir={tmp_path}`.*"
             f"image_folder")
  with pytest.raises(pipeline.DataError, match=message):
    pipeline.create_datasets(config)
