"""scikit-learn's bundled handwritten digits: the embedded real data set.

1797 grey-level 8 x 8 images of the digits 0-9 (UCI optical recognition of
handwritten digits, test part), shipped inside scikit-learn, so nothing is
downloaded.

Synopsis:
  split = load_digits_split(test_fraction=0.25, seed=0)
  split.train_images  # (N_train, 8, 8, 1) float32 in [0, 1]
  root = write_digits_image_folder(default_cache_dir())
  # root/train/3/0042.png: train image 42 (a "3"); root/val/... the test part
"""

import dataclasses
import os
import shutil
import tempfile

import numpy as np

from gcp_jax.data.config import DataError

NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class DigitsSplit:
  """A stratified train/test split; images NHWC float32 in [0, 1]."""
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray


def load_digits_split(test_fraction: float = 0.25,
                      seed: int = 0) -> DigitsSplit:
  """Loads the digits and splits every class with the same test fraction.

  Args:
    test_fraction: share of each class held out, in (0, 1).
    seed: seed of the per-class shuffle.

  Returns:
    A `DigitsSplit`; the same seed always gives the same split.
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(
        f"test_fraction must be in (0, 1), got {test_fraction}.")
  from sklearn.datasets import load_digits  # heavy import, only when used
  data = load_digits()
  images = (data.images / 16.0).astype(np.float32)[..., None]
  labels = data.target.astype(np.int32)
  rng = np.random.default_rng(seed)
  test = np.zeros(len(labels), bool)
  for c in range(NUM_CLASSES):
    idx = rng.permutation(np.flatnonzero(labels == c))
    test[idx[:int(round(test_fraction * len(idx)))]] = True
  return DigitsSplit(images[~test], labels[~test], images[test], labels[test])


def default_cache_dir() -> str:
  """~/.cache/gcp_jax/digits_v1: the PNG copy of the default split."""
  return os.path.join(os.path.expanduser("~"), ".cache", "gcp_jax",
                      "digits_v1")


def write_digits_image_folder(root: str) -> str:
  """Writes the default split (seed 0, 1347 / 450) once as PNG files.

  Layout root/{train,val}/{0..9}/NNNN.png, NNNN = the image's index in
  `DigitsSplit.train_images` / `test_images`, grey 8 x 8 PNGs holding
  round(255 * pixel), i.e. the 17 levels 0..16 scaled exactly to 0..255.
  The tree is written to a temporary sibling folder and renamed to `root`,
  so `root` is never left half written. A `root` holding train/ and val/
  is reused as is (even if another process wrote it concurrently); an empty
  `root` is filled; any other existing `root` is an error.

  Args:
    root: the folder to create.

  Returns:
    `root`.
  """
  if all(os.path.isdir(os.path.join(root, s)) for s in ("train", "val")):
    return root
  if os.path.isdir(root) and os.listdir(root):
    raise DataError(
        f"{root} is not empty and is not a digits cache (no train/ and val/ "
        f"in it); point data_dir at an empty or new folder.")
  from gcp_jax.data.tensorflow_cpu import tf  # heavy, only when writing
  parent = os.path.dirname(os.path.abspath(root))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(root) + ".tmp", dir=parent)
  try:
    split = load_digits_split()
    for name, images, labels in (
        ("train", split.train_images, split.train_labels),
        ("val", split.test_images, split.test_labels)):
      for c in range(NUM_CLASSES):
        os.makedirs(os.path.join(tmp, name, str(c)))
      pixels = np.round(images * 255.0).astype(np.uint8)
      for i, (image, label) in enumerate(zip(pixels, labels)):
        with open(os.path.join(tmp, name, str(label), f"{i:04d}.png"),
                  "wb") as f:
          f.write(tf.io.encode_png(image).numpy())
    try:
      os.rename(tmp, root)
    except OSError:
      if not os.path.isdir(root):  # not a lost race with another writer
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return root
