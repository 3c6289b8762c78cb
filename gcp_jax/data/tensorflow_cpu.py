"""TensorFlow as the library uses it: tf.data and event files, on the CPU.

Every module of gcp-jax that needs TensorFlow imports it from here
(`from gcp_jax.data.tensorflow_cpu import tf`), so the first import hides
every GPU from TensorFlow before any TF op runs: TF then never takes
accelerator memory that JAX needs (the pinned `tensorflow-cpu` has no GPU
support; a `tensorflow` GPU build installed instead would otherwise reserve
memory on every GPU).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Nothing here uses tf.keras; with this set `import tensorflow` does not
# import Keras 3 (seconds of CPU per process start; benchmarks/RESULTS.md).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402


def hide_gpus(tensorflow) -> None:
  """`tensorflow.config.set_visible_devices([], "GPU")`; a no-op when TF has
  initialised its devices already (it raises RuntimeError then)."""
  try:
    tensorflow.config.set_visible_devices([], "GPU")
  except RuntimeError:
    pass


hide_gpus(tf)

__all__ = ["hide_gpus", "tf"]
