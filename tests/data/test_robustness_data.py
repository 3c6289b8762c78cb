"""The corrupted-image sources of the robustness evaluation: the released
ImageNet-C folder layout on a small generated tree; tfds
imagenet2012_corrupted offline: the config names, the unprepared error, and
the read path through a stand-in builder (no real tfds data set is built
here, so tfds' own reading of a prepared imagenet2012_corrupted is not
exercised)."""

import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from gcp_jax.data import robustness
from gcp_jax.data.config import DataError, default_data_config

CLASSES = ("n01", "n02", "n03")


def _robust(root, **overrides):
  config = ml_collections.ConfigDict({
      "source": "folder", "data_dir": str(root), "seed": 0,
      "max_images_per_cell": 0})
  config.update(overrides)
  return config


def _data_config():
  config = default_data_config()
  config.image_size = 32
  config.eval_batch_size = 4
  return config


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  """root/{fog,snow}/{1,2}/CLASS/k.png; the image value encodes
  (corruption, severity, class, k) so the reader's output can be traced."""
  root = tmp_path_factory.mktemp("imagenet_c")
  for c, corruption in enumerate(("fog", "snow")):
    for severity in (1, 2):
      for label, name in enumerate(CLASSES):
        folder = root / corruption / str(severity) / name
        folder.mkdir(parents=True)
        for k in range(label + 1):          # 1, 2, 3 images: 6 per cell
          value = 10 * c + 40 * severity + 60 * label + 5 * k
          Image.fromarray(np.full((36, 40, 3), value, np.uint8)).save(
              folder / f"{k}.png")
  return root


def _images(data, corruption, severity):
  batches = list(data.batches(corruption, severity))
  mask = np.concatenate([b["mask"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])[mask > 0]
  pixels = np.concatenate([b["image"] for b in batches])[mask > 0]
  pixels = np.rint((pixels[:, 0, 0, 0] * 0.229 + 0.485) * 255)
  return batches, labels, pixels


def test_reads_the_layout_in_class_order_with_padding(tree):
  data = robustness.create_robustness_data(
      _robust(tree), _data_config(), class_names=CLASSES)
  data.check([("fog", 1), ("snow", 2)])
  assert data.num_images("snow", 2) == 6
  batches, labels, pixels = _images(data, "snow", 2)
  assert len(batches) == 2 and batches[0]["image"].shape == (4, 32, 32, 3)
  assert batches[1]["mask"].tolist() == [1, 1, 0, 0]
  assert labels.tolist() == [0, 1, 1, 2, 2, 2]
  assert pixels.tolist() == [90, 150, 155, 210, 215, 220]


def test_two_processes_share_a_cell(tree):
  seen = []
  for p in range(2):
    data = robustness.create_robustness_data(
        _robust(tree), _data_config(), class_names=CLASSES,
        process_index=p, process_count=2)
    assert data.num_batches("fog", 1) == 2  # 3 each in batches of 2
    seen += _images(data, "fog", 1)[2].tolist()
  assert sorted(seen) == [40, 100, 105, 160, 165, 170]


def test_subset_is_the_same_in_every_cell(tree):
  data = robustness.create_robustness_data(
      _robust(tree, max_images_per_cell=4), _data_config(),
      class_names=CLASSES)
  _, fog_labels, fog = _images(data, "fog", 1)
  _, snow_labels, snow = _images(data, "snow", 1)
  assert len(fog) == 4 and fog_labels.tolist() == snow_labels.tolist()
  np.testing.assert_array_equal(snow - fog, 10)


@pytest.mark.parametrize("cells, classes, message", [
    ([("frost", 1)], CLASSES, r"Corruption folder .*/frost does not exist"),
    ([("fog", 3)], CLASSES, r"Severity folder .*/fog/3 does not exist"),
    ([("fgo", 1)], CLASSES, r"Unknown corruption 'fgo'"),
    ([("fog", 1)], CLASSES + ("n04",),
     r"classes of .*/fog/1 \(3\) do not match the checkpoint's 4 classes "
     r"\(missing: \['n04'\]"),
])
def test_bad_layouts_are_one_line_errors(tree, cells, classes, message):
  data = robustness.create_robustness_data(
      _robust(tree), _data_config(), class_names=classes)
  with pytest.raises(DataError, match=message) as info:
    data.check(cells)
  assert "\n" not in str(info.value)


def test_unknown_source_and_missing_data_dir():
  with pytest.raises(DataError, match="Unknown robustness.source 'web'"):
    robustness.create_robustness_data(_robust("", source="web"),
                                      _data_config(), class_names=CLASSES)
  data = robustness.create_robustness_data(_robust(""), _data_config(),
                                           class_names=CLASSES)
  with pytest.raises(DataError, match="needs robustness.data_dir"):
    data.check([("fog", 1)])


def test_tfds_config_names():
  # tensorflow-datasets' imagenet2012_corrupted names its builder configs
  # CORRUPTION_SEVERITY (only the names are checked: no data set offline).
  assert robustness.tfds_config_name("gaussian_noise", 3) == \
      "gaussian_noise_3"
  assert robustness.tfds_config_name("jpeg_compression", 5) == \
      "jpeg_compression_5"
  with pytest.raises(DataError, match="Unknown corruption"):
    robustness.tfds_config_name("gaussian", 1)


def test_tfds_source_unprepared_is_a_one_line_error(tmp_path):
  data = robustness.create_robustness_data(
      _robust(tmp_path, source="tfds"), _data_config(), class_names=CLASSES)
  with pytest.raises(DataError, match=r"imagenet2012_corrupted/fog_2 is not "
                                      r"prepared"):
    data.check([("fog", 2)])


class _FakeBuilder:
  """Stands in for tfds.builder('imagenet2012_corrupted/NAME_S'): 5
  encoded PNGs whose value encodes (severity, index), labels i % 3."""

  def __init__(self, name):
    import io as _io
    import types
    self.name = name
    severity = int(name.rsplit("_", 1)[1])
    self.images = []
    for i in range(5):
      buffer = _io.BytesIO()
      Image.fromarray(np.full((40, 36, 3), 50 * severity + 10 * i,
                              np.uint8)).save(buffer, format="PNG")
      self.images.append(buffer.getvalue())
    label = types.SimpleNamespace(names=list(CLASSES))
    split = types.SimpleNamespace(num_examples=5)
    self.info = types.SimpleNamespace(features={"label": label},
                                      splits={"validation": split})

  def is_prepared(self):
    return True

  def as_dataset(self, split, decoders=None, read_config=None):
    from gcp_jax.data.tensorflow_cpu import tf
    assert split == "validation"
    return tf.data.Dataset.from_tensor_slices({
        "image": self.images, "label": np.arange(5) % 3})


def test_tfds_source_reads_the_config_of_each_cell(monkeypatch):
  import tensorflow_datasets as tfds
  built = []

  def fake_builder(name, data_dir=None):
    built.append(name)
    return _FakeBuilder(name)
  monkeypatch.setattr(tfds, "builder", fake_builder)
  data = robustness.create_robustness_data(
      _robust("", source="tfds", max_images_per_cell=4), _data_config(),
      class_names=CLASSES)
  data.check([("fog", 2)])
  assert built == ["imagenet2012_corrupted/fog_2"]
  assert data.num_images("fog", 2) == 4
  _, labels, pixels = _images(data, "fog", 2)
  keep = np.sort(np.random.default_rng(0).permutation(5)[:4])
  assert labels.tolist() == (keep % 3).tolist()
  assert pixels.tolist() == (100 + 10 * keep).tolist()
  # The other class list of a checkpoint is a one-line error.
  other = robustness.create_robustness_data(
      _robust("", source="tfds"), _data_config(), class_names=CLASSES[:2])
  with pytest.raises(DataError, match="do not match the checkpoint's 2"):
    other.check([("fog", 2)])
