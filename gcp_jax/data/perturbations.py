"""ImageNet-P perturbation sequences from the released videos,
DATA_DIR/PERTURBATION/CLASS/VIDEO.mp4 (each video one sequence of frames
x_1 ... x_n of one validation image), for the perturbation-stability
metrics (docs/method.md §12.3).

Synopsis:
  check_perturbation_dir(root, ["brightness"], class_names)
  for frames, label in sequences(root, "brightness", class_names,
                                 image_size=224, limit=0, seed=0):
    frames   # float32 (n, S, S, 3), normalised as evaluation images

Frames are decoded with OpenCV (BGR to RGB), their short side resized to S
and centre-cropped (the released frames are 224 crops already).
"""

import os
from collections.abc import Iterator, Sequence

import numpy as np

from gcp_jax.data.config import DataError

PERTURBATIONS = ("gaussian_noise", "shot_noise", "motion_blur",
                 "zoom_blur", "snow", "brightness", "translate", "rotate",
                 "tilt", "scale")
EXTRA_PERTURBATIONS = ("speckle_noise", "gaussian_blur", "spatter",
                       "shear")
NOISE_PERTURBATIONS = ("gaussian_noise", "shot_noise", "speckle_noise")
VIDEO_EXTENSIONS = (".mp4", ".avi")


def _videos(folder: str) -> list[str]:
  return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                if f.lower().endswith(VIDEO_EXTENSIONS)
                and not f.startswith("."))


def check_perturbation_dir(root: str, perturbations: Sequence[str],
                           class_names: Sequence[str]) -> None:
  """DataError for an unknown perturbation, a missing folder, or class
  folders other than the checkpoint's classes."""
  for name in perturbations:
    if name not in PERTURBATIONS + EXTRA_PERTURBATIONS:
      raise DataError(
          f"Unknown perturbation {name!r}; choose from "
          f"{', '.join(PERTURBATIONS + EXTRA_PERTURBATIONS)} "
          f"(config.robustness.perturbations).")
    folder = os.path.join(root, name)
    if not os.path.isdir(folder):
      raise DataError(
          f"Perturbation folder {folder} does not exist; the ImageNet-P "
          f"layout is {root}/PERTURBATION/CLASS/VIDEO.mp4 (or drop {name!r} "
          f"from robustness.perturbations).")
    found = sorted(e.name for e in os.scandir(folder)
                   if e.is_dir() and not e.name.startswith("."))
    if tuple(found) != tuple(class_names):
      missing = sorted(set(class_names) - set(found))
      extra = sorted(set(found) - set(class_names))
      raise DataError(
          f"The classes of {folder} ({len(found)}) do not match the "
          f"checkpoint's {len(class_names)} classes (missing: {missing[:5]}, "
          f"unexpected: {extra[:5]}); point robustness.data_dir at "
          f"ImageNet-P of the classes the model was trained on.")


def read_video(path: str) -> np.ndarray:
  """uint8 (n, H, W, 3) RGB frames of a video file."""
  import cv2
  capture = cv2.VideoCapture(path)
  frames = []
  try:
    while True:
      ok, frame = capture.read()
      if not ok:
        break
      frames.append(frame[..., ::-1])
  finally:
    capture.release()
  if len(frames) < 2:
    raise DataError(f"Cannot read a sequence of at least 2 frames from "
                    f"{path}; replace or delete the file.")
  return np.stack(frames)


def _crop(frames: np.ndarray, image_size: int) -> np.ndarray:
  from gcp_jax.data import preprocess
  from gcp_jax.data.tensorflow_cpu import tf
  out = [preprocess.eval_image(tf.constant(f), image_size=image_size,
                               resize_size=image_size).numpy()
         for f in frames]
  return np.stack(out).astype(np.float32)


def sequences(root: str, perturbation: str, class_names: Sequence[str], *,
              image_size: int, limit: int = 0, seed: int = 0
              ) -> Iterator[tuple[np.ndarray, int]]:
  """(normalised frames (n, S, S, 3), label) of every video of a
  perturbation, classes in `class_names` order; `limit` > 0 keeps that many
  videos chosen with `seed` (the same ones in every perturbation when the
  folders hold the same videos)."""
  items = [(path, label) for label, name in enumerate(class_names)
           for path in _videos(os.path.join(root, perturbation, name))]
  keep = np.arange(len(items))
  if limit and limit < len(items):
    keep = np.sort(np.random.default_rng(seed).permutation(len(items))
                   [:limit])
  for i in keep:
    path, label = items[i]
    yield _crop(read_video(path), image_size), label
