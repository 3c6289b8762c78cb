"""scikit-learn's bundled handwritten digits: the embedded real data set.

1797 grey-level 8 x 8 images of the digits 0-9 (UCI optical recognition of
handwritten digits, test part), shipped inside scikit-learn, so nothing is
downloaded.

Synopsis:
  split = load_digits_split(test_fraction=0.25, seed=0)
  split.train_images  # (N_train, 8, 8, 1) float32 in [0, 1]
"""

import dataclasses

import numpy as np

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
