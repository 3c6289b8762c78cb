"""The input pipeline: one process's numpy batches for a JAX training loop.

Synopsis:
  config = default_data_config()          # fields: gcp_jax/data/config.py
  datasets = create_datasets(config, process_index=jax.process_index(),
                             process_count=jax.process_count())
  datasets.info                           # DatasetInfo: classes, sizes
  for batch in datasets.train_batches(epoch, start_step):
    batch["image"], batch["label"]        # (B_local, S, S, 3) f32, (B_local,)
  for batch in datasets.eval_batches():
    batch["mask"]                         # (B_eval_local,) 1 real, 0 padding

Data sets (`config.name`):
  image_folder   root/{train,val}/CLASS/IMAGE (.jpg/.jpeg/.png, any case)
  digits         scikit-learn's digits written once as PNGs in that layout
                 (`digits.write_digits_image_folder`), then read as an image
                 folder: the default run decodes and augments real files
  imagenet2012   tensorflow-datasets, prepared by the user (tfds' manual
                 download); images stay encoded until the same decode and
                 augment functions (`preprocess`)

Determinism. The order of an epoch is a function of (seed, epoch) and the
augmentation of an example of (seed, epoch, position in the epoch), through
stateless random ops; nothing depends on how many batches were read before.
So `train_batches(epoch, k)` is bitwise the tail of `train_batches(epoch)`
from step k, and a resumed run sees the batches an uninterrupted run sees.
Skipping to step k only drops undecoded records. Image folders permute the
whole set and deal each global batch out to the processes, so the global
batches do not depend on the number of processes either; imagenet2012
gives each process a contiguous share of the split and shuffles it with
`shuffle_buffer`.

Unreadable images. A failing batch is re-read file by file to name the bad
image: `DataError` naming it, or with `skip_corrupt` the file is recorded
(`Datasets.corrupt_files`, `num_corrupt`) and the batch rebuilt: its slot
takes another image of the same batch (training; with its own
augmentation) or is masked out (evaluation). Slots never move, so resuming
stays exact.

Errors. Bad data or data config raises `DataError` (a ValueError and a
`gcp_jax.errors.GcpJaxError`) naming the path or value and the fix.
"""

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator

import ml_collections
import numpy as np
from absl import logging

from gcp_jax.data.tensorflow_cpu import tf
from gcp_jax.data import digits, preprocess, views
from gcp_jax.data.config import DataError, DataSettings, default_data_config
from gcp_jax.data.sources import (FolderSource, Record, TfdsSource,
                                  corrupt_error, decode_failure, graph_map,
                                  host_range)

__all__ = ["DataError", "DatasetInfo", "Datasets", "create_datasets",
           "default_data_config"]

Batch = dict[str, np.ndarray]
RecordReader = Callable[[int, int], tf.data.Dataset]  # (start, stop)
ExampleFn = Callable[[Record], dict[str, tf.Tensor]]
PREFETCH_BATCHES = 2


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the loop need to know about the data set."""
  num_classes: int
  num_train: int          # global number of training examples
  num_eval: int           # global number of eval examples
  class_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Stream:
  """One pass over this process's records of a split, in batches."""
  split: str             # "train" (full batches) or "val" (padded, masked)
  records: RecordReader  # (start, stop) -> records [start, stop)
  num_records: int
  batch_size: int
  example: ExampleFn     # record -> decoded, preprocessed example
  num_steps: int


def _epoch_key(seed: int, epoch: int) -> int:
  """A 32-bit key of (seed, epoch), for numpy and TF seeds alike."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class Datasets:
  """One process's training and evaluation batches (`create_datasets`).

  Attributes:
    info: the `DatasetInfo`.
    corrupt_files: {path or file name: reason} of images skipped so far
      (`skip_corrupt=True`); only this process's.
  """

  def __init__(self, source: FolderSource | TfdsSource,
               settings: DataSettings, process_index: int,
               process_count: int):
    self.info = DatasetInfo(len(source.class_names), source.num_train,
                            source.num_eval, source.class_names)
    self.corrupt_files = dict(source.failures)
    self._source, self._settings = source, settings
    self._process_index, self._process_count = process_index, process_count
    self._local_batch = settings.global_batch_size // process_count
    self._local_eval_batch = settings.eval_batch_size // process_count
    self._eval_sizes = [host_range(source.num_eval, p, process_count)
                        for p in range(process_count)]

  @property
  def num_corrupt(self) -> int:
    """How many unreadable images this process has skipped so far."""
    return len(self.corrupt_files)

  def full_pass_steps(self) -> int:
    """num_train // global_batch_size (the remainder is dropped)."""
    return self.info.num_train // self._settings.global_batch_size

  def steps_per_epoch(self) -> int:
    """`data.steps_per_epoch` if set, else `full_pass_steps()`."""
    return self._settings.steps_per_epoch or self.full_pass_steps()

  def num_eval_batches(self) -> int:
    """Evaluation batches per process, the same on every process."""
    largest = max(stop - start for start, stop in self._eval_sizes)
    return -(-largest // self._local_eval_batch)

  def train_batches(self, epoch: int, start_step: int = 0
                    ) -> Iterator[Batch]:
    """This process's batches of one epoch, from step `start_step` on.

    Args:
      epoch: epoch number, >= 0; with the seed it fixes order and
        augmentation.
      start_step: first step, in [0, steps_per_epoch()]; earlier steps are
        skipped before anything is read or decoded.

    Yields:
      {'image': float32 (B_local, S, S, 3), 'label': int32 (B_local,)},
      B_local = global_batch_size // process_count. The processes' batches
      of a step are disjoint and together are one global batch.
    """
    if epoch < 0 or not 0 <= start_step <= self.steps_per_epoch():
      raise ValueError(f"Need epoch >= 0 and 0 <= start_step <= "
                       f"{self.steps_per_epoch()}; got {epoch}, "
                       f"{start_step}.")
    key = _epoch_key(self._settings.seed, epoch)
    steps = self.steps_per_epoch()
    return self._batches(_Stream(
        "train", functools.partial(self._source.train_records, key),
        steps * self._local_batch, self._local_batch,
        functools.partial(self._train_example, key), steps), start_step)

  def eval_batches(self) -> Iterator[Batch]:
    """This process's evaluation batches, the last ones padded.

    Yields:
      `num_eval_batches()` dicts {'image': float32 (B, S, S, 3), 'label':
      int32 (B,), 'mask': float32 (B,)}, B = eval_batch_size //
      process_count; mask is 1 for real examples and 0 for padding. Over all
      processes every evaluation example appears exactly once with mask 1.
      With `eval_views` V > 1 the images are (B, V, S, S, 3)
      (`views.eval_views`); the evaluation step averages the V logits.
    """
    start, stop = self._eval_sizes[self._process_index]
    return self._batches(_Stream(
        "val", self._source.eval_records, stop - start,
        self._local_eval_batch, self._eval_example,
        self.num_eval_batches()), 0)

  def _train_example(self, key: int, record: Record) -> dict[str, tf.Tensor]:
    s = self._settings
    seed = tf.stack([tf.constant(key, tf.int64), record["position"]])
    image = preprocess.train_image(
        self._source.load("train", record), seed, augment=s.train_augment,
        image_size=s.image_size, resize_size=s.resize_size,
        scale_min=s.crop_scale_min, rand_augment=s.randaugment_spec,
        erasing_probability=s.random_erasing,
        color_jitter_strengths=s.color_jitter_strengths)
    return {"image": image, "label": record["label"]}

  def _eval_image_shape(self) -> list[int]:
    """(S, S, 3), or (V, S, S, 3) with V = eval_views > 1."""
    size, views = self._settings.image_size, self._settings.eval_views
    return ([views] if views > 1 else []) + [size, size, 3]

  def _eval_example(self, record: Record) -> dict[str, tf.Tensor]:
    s = self._settings

    def load():
      image = self._source.load("val", record)
      if s.eval_views == 1:
        return preprocess.eval_image(image, image_size=s.image_size,
                                     resize_size=s.resize_size)
      return views.eval_views(image, image_size=s.image_size,
                              resize_size=s.resize_size,
                              num_views=s.eval_views)

    image = tf.cond(record["mask"] > 0, load,   # else: skipped unreadable
                    lambda: tf.zeros(self._eval_image_shape()))
    return {"image": image, "label": record["label"],
            "mask": record["mask"]}

  def _batches(self, stream: _Stream, first_step: int) -> Iterator[Batch]:
    """Batches [first_step, stream.num_steps); after an unreadable image
    (`_check_batch`) the pipeline restarts at the failing batch."""
    step = first_step
    while step < stream.num_steps:
      try:
        for batch in self._dataset(stream, step).as_numpy_iterator():
          yield batch
          step += 1
      except tf.errors.OpError:
        start = step * stream.batch_size
        failed = stream.records(start, min(start + stream.batch_size,
                                           stream.num_records))
        if not self._check_batch(stream.split, failed, step):
          raise

  def _dataset(self, stream: _Stream, first_step: int) -> tf.data.Dataset:
    """The tf.data pipeline of batches [first_step, stream.num_steps).

    Training records fill exactly num_steps batches; evaluation records get
    mask 1 and are followed by zero images of mask 0 up to num_steps.
    """
    n, batch_size = stream.num_records, stream.batch_size
    start = min(first_step * batch_size, n)
    dataset = None
    if start < n:
      dataset = graph_map(stream.records(start, n).enumerate(start),
                          functools.partial(self._add_position, batch_size))
      if stream.split == "val":
        dataset = graph_map(dataset,
                            lambda r: {**r, "mask": tf.constant(1.0)})
      if self.corrupt_files:
        dataset = graph_map(dataset.batch(batch_size),
                            self._replace_corrupt).unbatch()
      dataset = graph_map(dataset, stream.example,
                          self._settings.num_parallel_calls)
    if stream.split == "val":
      padding = tf.data.Dataset.from_tensors({
          "image": tf.zeros(self._eval_image_shape(), tf.float32),
          "label": tf.constant(0, tf.int32), "mask": tf.constant(0.0)}
      ).repeat((stream.num_steps - first_step) * batch_size - (n - start))
      dataset = padding if dataset is None else dataset.concatenate(padding)
    options = tf.data.Options()
    options.deterministic = True
    options.threading.max_intra_op_parallelism = 1
    return (dataset.batch(batch_size, drop_remainder=True)
            .prefetch(PREFETCH_BATCHES).with_options(options))

  def _add_position(self, batch_size: int, index: tf.Tensor,
                    record: Record) -> Record:
    """Position of the record-th element of this process's stream in the
    global order of the epoch: step * global batch + slot across processes.
    """
    step, slot = index // batch_size, index % batch_size
    position = (step * batch_size * self._process_count
                + self._process_index * batch_size + slot)
    return {**record, "position": position}

  def _replace_corrupt(self, records: Record) -> Record:
    """Batched records with the known-unreadable images masked out
    (evaluation) or swapped for the batch's first readable one (training;
    the slot keeps its position)."""
    bad = tf.reduce_any(records["key"][:, None]
                        == tf.constant(sorted(self.corrupt_files))[None, :],
                        axis=1)
    if "mask" in records:
      return {**records, "mask": tf.where(bad, 0.0, records["mask"])}
    good = tf.where(~bad)[:, 0]
    first_good = tf.cond(tf.size(good) > 0, lambda: good[0],
                         lambda: tf.constant(0, tf.int64))
    source = tf.where(bad, first_good, tf.range(tf.size(bad, tf.int64)))
    return {k: (v if k == "position" else tf.gather(v, source))
            for k, v in records.items()}

  def _check_batch(self, split: str, records: tf.data.Dataset,
                   step: int) -> bool:
    """Re-reads a failed batch image by image.

    Returns:
      True if it found new unreadable images (now in `corrupt_files`);
      False if all decode, i.e. the failure was something else.

    Raises:
      DataError: unreadable images without `skip_corrupt`, or a training
        batch without one readable image.
    """
    keys, failures = [], {}
    for record in records:
      key = record["key"].numpy().decode()
      keys.append(key)
      if key not in self.corrupt_files:
        reason = decode_failure(lambda: self._source.load(split, record))
        if reason is not None:
          failures[key] = reason
    if failures and not self._settings.skip_corrupt:
      raise corrupt_error(failures)
    self.corrupt_files.update(failures)
    if split == "train" and all(k in self.corrupt_files for k in keys):
      raise DataError(
          f"Every image of training batch {step} is unreadable ({keys[:4]}"
          f"...); the data set looks broken, check data.data_dir.")
    for key, reason in failures.items():
      logging.warning("Skipping unreadable image %s: %s", key, reason)
    return bool(failures)


def create_datasets(config: ml_collections.ConfigDict, *,
                    process_index: int = 0,
                    process_count: int = 1) -> Datasets:
  """Opens the data set of a data config for one process.

  Args:
    config: the data config (fields in `gcp_jax.data.config`; missing
      fields take their defaults).
    process_index: this process, in [0, process_count).
    process_count: number of processes sharing the data.

  Returns:
    The process's `Datasets`.

  Raises:
    DataError: bad config, missing or malformed data, a batch that does not
      split over the processes or exceeds the training set, unreadable
      images (when found ahead, with `cache_decoded`).
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is not in "
                     f"[0, {process_count}).")
  s = DataSettings.from_config(config)
  s.check_process_split(process_count)
  data_dir = os.path.expanduser(s.data_dir)
  if s.name == "imagenet2012":
    source = TfdsSource(s.name, data_dir, process_index=process_index,
                        process_count=process_count,
                        shuffle_buffer=s.shuffle_buffer)
  else:
    if s.name == "digits":
      root = digits.write_digits_image_folder(
          data_dir or digits.default_cache_dir())
    elif not data_dir:
      raise DataError("data.name='image_folder' needs data.data_dir, the "
                      "folder holding train/CLASS/IMAGE and "
                      "val/CLASS/IMAGE.")
    else:
      root = data_dir
    source = FolderSource(
        root, process_index=process_index, process_count=process_count,
        global_batch_size=s.global_batch_size, cache_decoded=s.cache_decoded,
        num_parallel_calls=s.num_parallel_calls)
    if source.failures and not s.skip_corrupt:
      raise corrupt_error(source.failures)
  if s.global_batch_size > source.num_train:
    raise DataError(
        f"data.global_batch_size={s.global_batch_size} is larger than the "
        f"{source.num_train} training examples of {s.name!r}, so an epoch "
        f"has no full batch; use a batch of at most {source.num_train}.")
  datasets = Datasets(source, s, process_index, process_count)
  if s.steps_per_epoch > datasets.full_pass_steps():
    raise DataError(
        f"data.steps_per_epoch={s.steps_per_epoch} is more than one pass "
        f"over {s.name!r} ({datasets.full_pass_steps()} batches of "
        f"{s.global_batch_size}); use at most {datasets.full_pass_steps()} "
        f"(0 = the full pass).")
  return datasets
