"""TensorFlow never sees a GPU: the library imports it in one place, which
hides the GPUs before any TF op."""

import os
import re

from gcp_jax.data import tensorflow_cpu

PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_only_tensorflow_cpu_imports_tensorflow():
  importers = []
  for folder in ("gcp_jax", "."):
    root = os.path.join(PACKAGE, folder)
    names = (["main.py"] if folder == "." else
             [os.path.relpath(os.path.join(d, f), root)
              for d, _, files in os.walk(root) for f in files
              if f.endswith(".py")])
    for name in names:
      with open(os.path.join(root, name)) as f:
        if re.search(r"^\s*import tensorflow as tf\b", f.read(), re.M):
          importers.append(os.path.join(folder, name))
  assert importers == [os.path.join("gcp_jax", "data", "tensorflow_cpu.py")]


class _Config:
  def __init__(self, error=None):
    self.calls, self.error = [], error

  def set_visible_devices(self, devices, kind):
    self.calls.append((devices, kind))
    if self.error:
      raise self.error


class _TF:
  def __init__(self, error=None):
    self.config = _Config(error)


def test_hide_gpus_makes_no_gpu_visible_and_tolerates_late_calls():
  tf = _TF()
  tensorflow_cpu.hide_gpus(tf)
  assert tf.config.calls == [([], "GPU")]
  late = _TF(RuntimeError("Visible devices cannot be modified after being "
                          "initialized"))
  tensorflow_cpu.hide_gpus(late)   # no error: TF had started already
  assert late.config.calls == [([], "GPU")]
  assert tensorflow_cpu.tf.config.get_visible_devices("GPU") == []
