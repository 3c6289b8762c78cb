"""The gradient-direction probe during training (docs/method.md §10.1).

GCP_Optimization records, inside its training loop, the loss and the
gradient change along the activation gradient after the stem, every K
iterations of an epoch (K = 500 for ResNets), with the weights *before* the
update and on the same augmented mini-batch as the update. `ProbeHook` does
that for `train_and_evaluate`: when `(step % steps_per_epoch) % every_steps
== 0` it runs `gcp_jax.analysis.gradient_probe` on the step's global batch
and the pre-update state, and rewrites `WORKDIR/gradient_probe.json`
(atomically; process 0 only).

Resuming: the probes of steps at or after the resumed step are dropped from
the file when the hook starts (they are recomputed, on the same batches and
weights), so a killed run leaves exactly one record per probed step.

Config (`config.gradient_probe`, see configs/common.py):
  every_steps   K; 0 = off
  eta_min, eta_max, num_etas   the step-size grid (linear, inclusive)
  bn_mode       "batch" (the reference: batch statistics) or "running"
"""

import os

import jax
import ml_collections
from jax.sharding import Mesh

from gcp_jax.analysis import gradient_probe
from gcp_jax.train.state import TrainState

PROBE_FILE = "gradient_probe.json"
_KEY_TAG = 0x9B0BE   # separates the probe's dropout stream from training's


class ProbeHook:
  """Calls the probe at the configured in-epoch steps and keeps the file."""

  def __init__(self, probe_config: ml_collections.ConfigDict, model,
               mesh: Mesh, workdir: str, steps_per_epoch: int,
               start_step: int):
    self.every = int(probe_config.every_steps)
    self._steps_per_epoch = steps_per_epoch
    self._path = os.path.join(workdir, PROBE_FILE)
    self._write = jax.process_index() == 0
    if not self.every:
      return
    if not hasattr(model, "from_stem"):
      raise ValueError(
          f"config.gradient_probe needs a model split at the stem (methods "
          f"`stem` and `from_stem`, as the gcp_jax ResNets and ViTs have); "
          f"{type(model).__name__} has none. Set "
          f"--config.gradient_probe.every_steps=0.")
    self._probe = gradient_probe.make_gradient_probe(
        gradient_probe.resnet_split(model), bn_mode=probe_config.bn_mode,
        etas=gradient_probe.default_etas(probe_config.eta_min,
                                         probe_config.eta_max,
                                         probe_config.num_etas),
        mesh=mesh)
    self.results = []
    if os.path.exists(self._path):
      self.results = [r for r in gradient_probe.load_results(self._path)
                      if r.step is not None and r.step < start_step]

  def wants(self, step: int) -> bool:
    """Whether the step about to run (0-based) is probed."""
    return bool(self.every) and (step % self._steps_per_epoch) % self.every == 0

  def __call__(self, state: TrainState, batch: dict, step: int) -> None:
    """Probes the pre-update `state` on the global `batch` of `step`."""
    key = jax.random.fold_in(jax.random.fold_in(state.base_key(), _KEY_TAG),
                             step)
    self.results.append(self._probe(state.variables(), batch["image"],
                                    batch["label"], key, step=step))
    if self._write:
      gradient_probe.save_results(self.results, self._path)
