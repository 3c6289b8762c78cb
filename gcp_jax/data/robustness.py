"""Evaluation batches of corrupted images, one (corruption, severity) cell
at a time, for the corruption-robustness evaluation
(`gcp_jax.train.robustness`).

Sources (`config.robustness.source`):
  on_the_fly  the evaluation split of `config.data` (the digits or an image
              folder), each image resized and centre-cropped to S x S as in
              evaluation, rounded to uint8, corrupted with `imagecorruptions`
              (`gcp_jax.data.corruptions`), then normalised. ImageNet-C
              corrupted the 224 centre crop too.
  folder      the released ImageNet-C tree DATA_DIR/CORRUPTION/SEVERITY/
              CLASS/IMAGE (images already 224 crops): short side resized to
              S (a no-op for S = 224) and centre-cropped, normalised.
  tfds        tensorflow-datasets `imagenet2012_corrupted`, builder config
              CORRUPTION_SEVERITY, split validation; same transform.

Synopsis:
  data = create_robustness_data(config.robustness, config.data,
                                class_names=datasets.info.class_names)
  data.check(cells)      # every cell readable; one-line DataError if not
  for batch in data.batches("fog", 3):   # severity 0: clean (on_the_fly)
    batch["image"], batch["label"], batch["mask"]

Batches are this process's share, padded to the same number of batches on
every process with mask-0 examples, as `Datasets.eval_batches`.
"""

import os
from collections.abc import Iterator, Sequence

import ml_collections
import numpy as np

from gcp_jax.data.tensorflow_cpu import tf
from gcp_jax.data import corruptions, digits, preprocess
from gcp_jax.data.config import DataError, DataSettings
from gcp_jax.data.sources import FolderSource, _scan_split, graph_map, \
    host_range

SOURCES = ("on_the_fly", "folder", "tfds")
TFDS_NAME = "imagenet2012_corrupted"
Batch = dict[str, np.ndarray]


def tfds_config_name(corruption: str, severity: int) -> str:
  """The `imagenet2012_corrupted` builder config of a cell, e.g.
  'gaussian_noise_3'."""
  corruptions.check_corruption_names([corruption], [severity])
  return f"{corruption}_{severity}"


def _normalize(images: np.ndarray) -> np.ndarray:
  """uint8 / [0, 255] pixels to the evaluation's normalised float32."""
  x = images.astype(np.float32) / 255.0
  return ((x - np.float32(preprocess.MEAN_RGB))
          / np.float32(preprocess.STDDEV_RGB)).astype(np.float32)


def _subset(n: int, limit: int, seed: int) -> np.ndarray:
  """Indices of the evaluated images: all, or `limit` of them chosen with
  `seed` (sorted), the same for every cell."""
  if not limit or limit >= n:
    return np.arange(n)
  return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


class RobustnessData:
  """Corrupted evaluation batches of one source (`create_robustness_data`).

  Attributes:
    class_names: the classes, in label order.
  """

  def __init__(self, robustness: ml_collections.ConfigDict,
               settings: DataSettings, class_names: Sequence[str],
               process_index: int, process_count: int):
    self.source = robustness.source
    self.class_names = tuple(class_names)
    self._root = os.path.expanduser(robustness.data_dir or "")
    self._seed = int(robustness.seed)
    self._limit = int(robustness.max_images_per_cell)
    self._settings = settings
    self._process_index, self._process_count = process_index, process_count
    self._local_batch = settings.eval_batch_size // process_count
    self._clean_files = None
    if self.source == "on_the_fly":
      self._clean_files = self._on_the_fly_files()

  # What is read ---------------------------------------------------------

  def _on_the_fly_files(self) -> tuple[np.ndarray, np.ndarray]:
    s = self._settings
    if s.name == "imagenet2012":
      raise DataError(
          "robustness.source='on_the_fly' corrupts an image folder or the "
          "digits, not tfds imagenet2012; use source='tfds' "
          "(imagenet2012_corrupted) or 'folder' (the released ImageNet-C).")
    if s.image_size < corruptions.MIN_SIDE:
      raise DataError(
          f"data.image_size={s.image_size} is too small to corrupt: "
          f"imagecorruptions needs at least {corruptions.MIN_SIDE} pixels a "
          f"side; set --config.data.image_size={corruptions.MIN_SIDE} or "
          f"more.")
    root = (digits.write_digits_image_folder(
        os.path.expanduser(s.data_dir) or digits.default_cache_dir())
            if s.name == "digits" else os.path.expanduser(s.data_dir))
    source = FolderSource(root, process_index=0, process_count=1,
                          global_batch_size=1)
    self._check_classes(source.class_names, f"{root}/val")
    return source.eval_files()

  def _folder_files(self, corruption: str, severity: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(paths, labels) of DATA_DIR/corruption/severity/CLASS/IMAGE."""
    if not self._root:
      raise DataError("robustness.source='folder' needs "
                      "robustness.data_dir, the ImageNet-C folder holding "
                      "CORRUPTION/SEVERITY/CLASS/IMAGE.")
    folder = os.path.join(self._root, corruption)
    if not os.path.isdir(folder):
      raise DataError(
          f"Corruption folder {folder} does not exist; the ImageNet-C "
          f"layout is {self._root}/CORRUPTION/SEVERITY/CLASS/IMAGE (or "
          f"drop {corruption!r} from robustness.corruptions).")
    if not os.path.isdir(os.path.join(folder, str(severity))):
      raise DataError(
          f"Severity folder {folder}/{severity} does not exist; extract "
          f"severity {severity} of {corruption} there or set "
          f"robustness.severities to those present.")
    files = _scan_split(folder, str(severity))
    self._check_classes(tuple(files), f"{folder}/{severity}")
    paths = np.array([p for c in self.class_names for p in files[c]])
    labels = np.repeat(np.arange(len(self.class_names), dtype=np.int32),
                       [len(files[c]) for c in self.class_names])
    return paths, labels

  def _check_classes(self, found: Sequence[str], where: str) -> None:
    if tuple(found) != self.class_names:
      missing = sorted(set(self.class_names) - set(found))
      extra = sorted(set(found) - set(self.class_names))
      raise DataError(
          f"The classes of {where} ({len(found)}) do not match the "
          f"checkpoint's {len(self.class_names)} classes (missing: "
          f"{missing[:5]}, unexpected: {extra[:5]}); point the data at the "
          f"classes the model was trained on.")

  def _tfds_builder(self, corruption: str, severity: int):
    import tensorflow_datasets as tfds
    name = f"{TFDS_NAME}/{tfds_config_name(corruption, severity)}"
    builder = tfds.builder(name, data_dir=self._root or None)
    if not builder.is_prepared():
      raise DataError(
          f"tensorflow-datasets {name} is not prepared in "
          f"{self._root or '~/tensorflow_datasets'}; build it with `tfds "
          f"build {TFDS_NAME} --config {corruption}_{severity}` (it needs "
          f"the ImageNet validation tar) or use robustness.source='folder'.")
    classes = tuple(builder.info.features["label"].names)
    self._check_classes(classes, name)
    return builder

  def check(self, cells: Sequence[tuple[str, int]]) -> None:
    """Raises DataError for the first cell that cannot be read (unknown
    corruption, missing folder or severity, other classes, unprepared
    tfds config), before anything is evaluated or written."""
    corruptions.check_corruption_names([c for c, _ in cells],
                                       [s for _, s in cells])
    for corruption, severity in cells:
      if self.source == "folder":
        self._folder_files(corruption, severity)
      elif self.source == "tfds":
        self._tfds_builder(corruption, severity)

  # Batches --------------------------------------------------------------

  def num_images(self, corruption: str, severity: int) -> int:
    """Images evaluated in a cell (all processes)."""
    if self.source == "tfds":
      builder = self._tfds_builder(corruption, severity)
      n = builder.info.splits["validation"].num_examples
    elif self.source == "folder":
      n = len(self._folder_files(corruption, severity)[0])
    else:
      n = len(self._clean_files[0])
    return len(_subset(n, self._limit, self._seed))

  def _crops(self, corruption: str, severity: int
             ) -> tuple[tf.data.Dataset, int, int]:
    """(uint8 S x S crops with labels and global index, first index, number
    of this process's images)."""
    s = self._settings
    if self.source == "tfds":
      import tensorflow_datasets as tfds
      builder = self._tfds_builder(corruption, severity)
      n = builder.info.splits["validation"].num_examples
      keep = _subset(n, self._limit, self._seed)
      start, stop = host_range(len(keep), self._process_index,
                               self._process_count)
      dataset = builder.as_dataset(
          split="validation", decoders={"image": tfds.decode.SkipDecoding()},
          read_config=tfds.ReadConfig(try_autocache=False))
      dataset = dataset.enumerate()
      wanted = tf.constant(keep[start:stop], tf.int64)
      dataset = dataset.filter(
          lambda i, x: tf.reduce_any(tf.equal(wanted, i)))
      dataset = graph_map(dataset, lambda i, x: (
          x["image"], tf.cast(x["label"], tf.int32), i))
      size, resize = s.image_size, s.image_size
    else:
      paths, labels = (self._clean_files if self.source == "on_the_fly"
                       else self._folder_files(corruption, severity))
      keep = _subset(len(paths), self._limit, self._seed)
      start, stop = host_range(len(keep), self._process_index,
                               self._process_count)
      mine = keep[start:stop]
      dataset = tf.data.Dataset.from_tensor_slices(
          (paths[mine], labels[mine], mine.astype(np.int64)))
      dataset = graph_map(dataset, lambda p, y, i: (tf.io.read_file(p), y, i))
      size = s.image_size
      resize = s.resize_size if self.source == "on_the_fly" else size

    def crop(encoded, label, index):
      image = preprocess.resize_and_centre_crop(
          encoded, image_size=size, resize_size=resize)
      return (tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8),
              label, index)

    return (graph_map(dataset, crop, s.num_parallel_calls).prefetch(2),
            start, stop - start)

  def num_batches(self, corruption: str, severity: int) -> int:
    """Batches per process of a cell, the same on every process."""
    n = self.num_images(corruption, severity)
    largest = max(b - a for a, b in (host_range(n, p, self._process_count)
                                     for p in range(self._process_count)))
    return max(1, -(-largest // self._local_batch))

  def batches(self, corruption: str | None, severity: int
              ) -> Iterator[Batch]:
    """This process's batches of a cell; `corruption` None (or severity 0)
    is the clean images through the same path (on_the_fly only)."""
    clean = corruption is None or severity == 0
    if clean and self.source != "on_the_fly":
      raise ValueError("Clean batches come from the normal evaluation "
                       "unless the source is on_the_fly.")
    cell = (corruptions.CORRUPTIONS[0], 1) if clean else (corruption,
                                                          severity)
    dataset, _, _ = self._crops(*cell)
    num_batches = self.num_batches(*cell)
    b = self._local_batch
    size = self._settings.image_size
    images = np.zeros((b, size, size, 3), np.float32)
    labels = np.zeros((b,), np.int32)
    mask = np.zeros((b,), np.float32)
    filled, emitted = 0, 0
    for image, label, index in dataset.as_numpy_iterator():
      if not clean and self.source == "on_the_fly":
        image = corruptions.corrupt(
            image, corruption, severity,
            corruptions.image_seed(self._seed, corruption, severity,
                                   int(index)))
      images[filled], labels[filled], mask[filled] = (
          _normalize(image), label, 1.0)
      filled += 1
      if filled == b:
        yield {"image": images.copy(), "label": labels.copy(),
               "mask": mask.copy()}
        emitted, filled = emitted + 1, 0
        mask[:] = 0.0
    while emitted < num_batches:
      images[filled:], labels[filled:], mask[filled:] = 0.0, 0, 0.0
      yield {"image": images.copy(), "label": labels.copy(),
             "mask": mask.copy()}
      emitted, filled = emitted + 1, 0


def create_robustness_data(robustness: ml_collections.ConfigDict,
                           data: ml_collections.ConfigDict, *,
                           class_names: Sequence[str],
                           process_index: int = 0,
                           process_count: int = 1) -> RobustnessData:
  """The `RobustnessData` of a robustness config (`configs/common.py`,
  `config.robustness`) and the data config the model was evaluated with.

  Raises:
    DataError: an unknown source, or on_the_fly data that cannot be
      corrupted (tfds imagenet2012, images under 32 pixels), or classes
      that differ from `class_names`.
  """
  if robustness.source not in SOURCES:
    raise DataError(f"Unknown robustness.source {robustness.source!r}; "
                    f"choose one of {', '.join(SOURCES)}.")
  settings = DataSettings.from_config(data)
  return RobustnessData(robustness, settings, class_names, process_index,
                        process_count)
