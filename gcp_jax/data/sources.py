"""Where examples come from: image folders and tensorflow-datasets.

A source serves one process's share of a data set as `tf.data` records
{'key': tf.string (file path or name), 'label': int32, plus 'encoded':
tf.string (tfds) or 'index': int64 (image folder with a decoded cache)};
`load(split, record)` gives the encoded bytes (read from the file or the
record) or the cached decoded image. Records are cheap (nothing is read or
decoded), so skipping them to resume mid-epoch costs almost nothing.

* Training: the process reads elements [start, stop) of its stream for one
  epoch; the stream is a function of (epoch key, process index).
* Evaluation: the process owns `host_range(num_eval, ...)` of the split, in
  a fixed order.

Synopsis:
  source = FolderSource(root, process_index=0, process_count=1,
                        global_batch_size=64)
  records = source.train_records(epoch_key, start=0, stop=64)
  record = next(iter(records))
  image = preprocess.decode_image(source.load("train", record))
"""

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from gcp_jax.data.tensorflow_cpu import tf  # first: hides the GPUs from TF
import tensorflow_datasets as tfds  # noqa: E402,I001

from gcp_jax.data import preprocess
from gcp_jax.data.config import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
Record = dict[str, tf.Tensor]


def host_range(num_examples: int, process_index: int,
               process_count: int) -> tuple[int, int]:
  """[start, stop) of one process's contiguous share; shares differ by at
  most one example and together cover the split."""
  return (num_examples * process_index // process_count,
          num_examples * (process_index + 1) // process_count)


def decode_failure(load: Callable[[], tf.Tensor]) -> str | None:
  """Why `decode_image(load())` fails eagerly, or None if it works."""
  try:
    preprocess.decode_image(load())
  except tf.errors.OpError as error:
    return error.message
  return None


def corrupt_error(failures: dict[str, str]) -> DataError:
  """The error for unreadable images {path or name: reason}."""
  names = list(failures)
  more = (f" (and {len(names) - 1} more: {', '.join(names[1:4])}"
          f"{', ...' if len(names) > 4 else ''})" if len(names) > 1 else "")
  return DataError(
      f"Cannot decode image {names[0]}: {failures[names[0]]}{more}. Replace "
      f"or delete the file, or set data.skip_corrupt=True to skip unreadable "
      f"images (they are counted in Datasets.num_corrupt).")


def _image_files(folder: str) -> list[str]:
  """Image files under `folder` (recursively, hidden entries skipped)."""
  found = []
  for parent, dirs, files in os.walk(folder, followlinks=True):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    found += [os.path.join(parent, f) for f in sorted(files)
              if not f.startswith(".")
              and f.lower().endswith(IMAGE_EXTENSIONS)]
  return found


def _scan_split(root: str, split: str) -> dict[str, list[str]]:
  """{class name: image paths} of root/split, classes sorted."""
  path = os.path.join(root, split)
  layout = f"{root}/train/CLASS/IMAGE and {root}/val/CLASS/IMAGE"
  if not os.path.isdir(path):
    raise DataError(f"{path} does not exist; an image folder needs the "
                    f"layout {layout}.")
  classes = sorted(e.name for e in os.scandir(path)
                   if e.is_dir() and not e.name.startswith("."))
  if not classes:
    raise DataError(f"{path} is empty: it has no class folders; put each "
                    f"class's images in {path}/CLASS_NAME/.")
  files = {c: _image_files(os.path.join(path, c)) for c in classes}
  for c, paths in files.items():
    if not paths:
      raise DataError(
          f"Class folder {os.path.join(path, c)} has no images "
          f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the "
          f"folder (from both train/ and val/).")
  return files


def _flatten(files: dict[str, list[str]], class_names: tuple[str, ...]
             ) -> tuple[np.ndarray, np.ndarray]:
  """(paths, int32 labels) in class order, labels = index in class_names."""
  paths = np.array([p for c in class_names for p in files[c]])
  labels = np.repeat(np.arange(len(class_names), dtype=np.int32),
                     [len(files[c]) for c in class_names])
  return paths, labels


def graph_map(dataset: tf.data.Dataset, fn: Callable[..., Any],
              num_parallel_calls: int | None = None) -> tf.data.Dataset:
  """`dataset.map(fn)` with AutoGraph off.

  Every function the pipeline maps is written in graph form (tf.cond,
  tf.switch_case; Python `if` only on Python values), so AutoGraph's source
  conversion, which tf.data runs on each mapped function every time a
  pipeline is built (every epoch), only costs time, a noticeable share of a
  short run (measurements: benchmarks/RESULTS.md, "Numbers from library and
  test docstrings").
  """
  return dataset.map(tf.autograph.experimental.do_not_convert(fn),
                     num_parallel_calls)


class _DecodedImages:
  """Every image of a list decoded once, kept in one flat uint8 buffer."""

  def __init__(self, paths: np.ndarray, num_parallel_calls: int):
    def decode(i, path):
      return i, preprocess.decode_image(tf.io.read_file(path))

    decoded = graph_map(
        tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths)),
        decode, num_parallel_calls).ignore_errors()
    images = [np.zeros((0, 0, 3), np.uint8)] * len(paths)
    read = np.zeros(len(paths), bool)
    for i, image in decoded.as_numpy_iterator():
      images[i], read[i] = image, True
    self.failures = {
        str(p): decode_failure(lambda p=p: tf.io.read_file(p))
        for p in paths[~read]}
    sizes = np.array([im.size for im in images], np.int64)
    self._offsets = tf.constant(np.cumsum(sizes) - sizes)
    self._shapes = tf.constant(np.array([im.shape[:2] for im in images],
                                        np.int32))
    self._pixels = tf.constant(np.concatenate([im.ravel() for im in images]))

  def lookup(self, index: tf.Tensor) -> tf.Tensor:
    """uint8 (H, W, 3) image number `index`."""
    start, shape = self._offsets[index], self._shapes[index]
    size = tf.cast(shape[0] * shape[1] * 3, tf.int64)
    return tf.reshape(self._pixels[start:start + size],
                      tf.concat([shape, [3]], axis=0))


class FolderSource:
  """An ImageFolder tree root/{train,val}/CLASS/IMAGE (.jpg/.jpeg/.png).

  Classes are the sorted folder names of train/; val/ must have the same.
  Every epoch the whole training set is permuted (seeded by the epoch key);
  the first `steps * global_batch_size` examples are cut into global
  batches and process p takes the p-th `local_batch` slice of each.

  Attributes:
    class_names, num_train, num_eval: as in `DatasetInfo`.
    failures: {path: reason} of images found unreadable while caching.
  """

  def __init__(self, root: str, *, process_index: int, process_count: int,
               global_batch_size: int, cache_decoded: bool = False,
               num_parallel_calls: int = -1):
    if not os.path.isdir(root):
      raise DataError(
          f"Image folder {root} does not exist; set data.data_dir to a "
          f"folder with the layout {root}/train/CLASS/IMAGE and "
          f"{root}/val/CLASS/IMAGE.")
    train, val = _scan_split(root, "train"), _scan_split(root, "val")
    if set(train) != set(val):
      only_val = sorted(set(val) - set(train))
      only_train = sorted(set(train) - set(val))
      raise DataError(
          f"The classes of {root}/val differ from those of {root}/train: "
          f"in val/ only: {only_val[:10]}, in train/ only: "
          f"{only_train[:10]}; "
          f"val/ must have exactly the class folders of train/.")
    self.class_names = tuple(train)
    self._splits = {"train": _flatten(train, self.class_names),
                    "val": _flatten(val, self.class_names)}
    self.num_train, self.num_eval = (len(self._splits[s][0])
                                     for s in ("train", "val"))
    self._process_index, self._process_count = process_index, process_count
    self._global_batch = global_batch_size
    self._cache = ({s: _DecodedImages(paths, num_parallel_calls)
                    for s, (paths, _) in self._splits.items()}
                   if cache_decoded else None)
    self.failures = ({k: v for c in self._cache.values()
                      for k, v in c.failures.items()} if self._cache else {})

  def _records(self, split: str, indices: np.ndarray) -> tf.data.Dataset:
    paths, labels = self._splits[split]
    fields = {"key": paths[indices], "label": labels[indices]}
    if self._cache:
      fields["index"] = indices.astype(np.int64)
    return tf.data.Dataset.from_tensor_slices(fields)

  def train_records(self, epoch_key: int, start: int,
                    stop: int) -> tf.data.Dataset:
    """Elements [start, stop) of this process's training stream."""
    steps = self.num_train // self._global_batch
    local = self._global_batch // self._process_count
    order = np.random.default_rng(epoch_key).permutation(self.num_train)
    order = order[:steps * self._global_batch].reshape(
        steps, self._process_count, local)[:, self._process_index]
    return self._records("train", order.reshape(-1)[start:stop])

  def eval_records(self, start: int, stop: int) -> tf.data.Dataset:
    """Elements [start, stop) of this process's share of val/."""
    first, _ = host_range(self.num_eval, self._process_index,
                          self._process_count)
    return self._records("val", np.arange(first + start, first + stop))

  def eval_files(self) -> tuple[np.ndarray, np.ndarray]:
    """(paths, int32 labels) of the whole val/ split, in class order."""
    return self._splits["val"]

  def load(self, split: str, record: Record) -> tf.Tensor:
    """Encoded bytes, or the decoded uint8 image when caching."""
    if self._cache:
      return self._cache[split].lookup(record["index"])
    return tf.io.read_file(record["key"])


class TfdsSource:
  """A prepared tensorflow-datasets image classification data set (splits
  "train" and "validation", features "image", "label", "file_name").

  Process p reads `host_range` of each split. Every epoch its training share
  is read with the files shuffled and then through a `shuffle_buffer`
  shuffle, both seeded by the epoch key (tf.data keeps the order
  deterministic), so the stream is a function of (epoch key, p).

  Attributes:
    class_names, num_train, num_eval: as in `DatasetInfo`.
    failures: always empty (nothing is decoded ahead).
  """

  SPLITS = {"train": "train", "val": "validation"}

  def __init__(self, name: str, data_dir: str, *, process_index: int,
               process_count: int, shuffle_buffer: int):
    self._builder = tfds.builder(name, data_dir=data_dir or None)
    root = os.path.dirname(os.path.dirname(self._builder.data_dir))
    if not self._builder.is_prepared():
      raise DataError(
          f"tensorflow-datasets {name} is not prepared in {root}. Download "
          f"ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from "
          f"https://image-net.org into {root}/downloads/manual/ and run "
          f"`tfds build {name} --data_dir={root}` (it converts them once), "
          f"then set data.data_dir={root}; or put the images in the "
          f"ImageFolder layout and use data.name='image_folder'.")
    info = self._builder.info
    missing = [s for s in self.SPLITS.values() if s not in info.splits]
    if missing:
      raise DataError(f"tensorflow-datasets {name} in {root} has no split "
                      f"{missing}; rebuild it with all of "
                      f"{list(self.SPLITS.values())}.")
    self.class_names = tuple(info.features["label"].names)
    self.num_train, self.num_eval = (info.splits[s].num_examples
                                     for s in self.SPLITS.values())
    self._process_index, self._process_count = process_index, process_count
    self._shuffle_buffer = shuffle_buffer
    self.failures = {}

  def _read(self, split: str, start: int, stop: int,
            shuffle_key: int | None = None) -> tf.data.Dataset:
    """Examples [start, stop) of a split as records; files shuffled with
    `shuffle_key` unless it is None."""
    dataset = self._builder.as_dataset(
        split=f"{split}[{start}:{stop}]",
        shuffle_files=shuffle_key is not None,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=shuffle_key,
                                    try_autocache=False))
    return graph_map(dataset, lambda x: {
        "key": x["file_name"], "label": tf.cast(x["label"], tf.int32),
        "encoded": x["image"]})

  def train_records(self, epoch_key: int, start: int,
                    stop: int) -> tf.data.Dataset:
    """Elements [start, stop) of this process's training stream."""
    first, last = host_range(self.num_train, self._process_index,
                             self._process_count)
    return (self._read(self.SPLITS["train"], first, last, epoch_key)
            .shuffle(self._shuffle_buffer, seed=epoch_key)
            .skip(start).take(stop - start))

  def eval_records(self, start: int, stop: int) -> tf.data.Dataset:
    """Elements [start, stop) of this process's share of the validation
    split."""
    first, _ = host_range(self.num_eval, self._process_index,
                          self._process_count)
    return self._read(self.SPLITS["val"], first + start, first + stop)

  def load(self, split: str, record: Record) -> tf.Tensor:
    """The encoded image bytes."""
    del split  # both splits are stored alike
    return record["encoded"]
