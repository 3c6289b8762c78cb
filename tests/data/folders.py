"""Tiny image folders written by the tests, and reading ids back.

An "id image" is a constant colour that encodes an integer id (red = id %
256, green = id // 256), so an example can be recognised after any crop,
resize, flip and normalisation; it is stored as PNG (lossless).
"""

import os

import ml_collections
import numpy as np
import tensorflow as tf

from gcp_jax.data import preprocess


def write_image(path: str, image: np.ndarray, fmt: str = "png") -> None:
  """Writes uint8 (H, W, C) as PNG or JPEG, creating the folder."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  encode = tf.io.encode_png if fmt == "png" else tf.io.encode_jpeg
  with open(path, "wb") as f:
    f.write(encode(image).numpy())


def id_image(example_id: int, size: tuple[int, int] = (20, 16)
             ) -> np.ndarray:
  """uint8 (H, W, 3) of the colour encoding `example_id`."""
  colour = [example_id % 256, example_id // 256, 128]
  return np.broadcast_to(np.array(colour, np.uint8), (*size, 3)).copy()


def image_ids(images: np.ndarray) -> np.ndarray:
  """Ids of a batch of normalised id images (B, S, S, 3) -> int (B,)."""
  pixels = images[:, 0, 0] * preprocess.STDDEV_RGB + preprocess.MEAN_RGB
  pixels = np.round(pixels * 255.0).astype(np.int64)
  return pixels[:, 0] + 256 * pixels[:, 1]


def write_id_folder(root: str, num_train: dict[str, int],
                    num_val: dict[str, int]) -> None:
  """root/{train,val}/CLASS/ID.png id images; ids are unique over the tree
  (train first, classes in the given order)."""
  next_id = 0
  for split, counts in (("train", num_train), ("val", num_val)):
    for name, count in counts.items():
      for _ in range(count):
        write_image(os.path.join(root, split, name, f"{next_id:05d}.png"),
                    id_image(next_id))
        next_id += 1


def folder_config(root: str, **overrides) -> ml_collections.ConfigDict:
  """A small image_folder data config (16 px, 8-image batches)."""
  config = ml_collections.ConfigDict({
      "name": "image_folder", "data_dir": str(root), "image_size": 16,
      "global_batch_size": 8, "eval_batch_size": 8})
  config.update(overrides)
  return config
