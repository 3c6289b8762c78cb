"""Every backbone family beyond the ResNets compiles and runs one
data-parallel training step on the 4 forced CPU devices (tests/conftest.py),
with synchronised BatchNorm over the `data` axis as main.py builds it:
finite loss, every kernel moved. Tiny variants keep the compiles short."""

import jax
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from gcp_jax import parallel
from gcp_jax.models import create_model
from gcp_jax.train.optim import create_optimizer
from gcp_jax.train.schedules import create_lr_schedule
from gcp_jax.train.state import TrainState, initial_state
from gcp_jax.train.steps import make_train_step

CLASSES = 5
# name, image size, overrides of the published model.
FAMILIES = [
    ("mobilenet_v2_isqrt", 64, {"width_mult": 0.25, "dim": 8}),
    ("shufflenet_v2_isqrt", 64, {"width_mult": 0.5, "dim": 8}),
    ("se_resnet50_isqrt", 64, {"width": 8, "dim": 8}),
    ("vgg16_bn_isqrt", 32, {"blocks": ((8,), (8,), (16,)), "dim": 8}),
    ("deit_drop_tiny_test_dropcov", 64, {}),
]


@pytest.mark.parametrize("name,size,overrides", FAMILIES,
                         ids=[f[0] for f in FAMILIES])
def test_one_training_step_on_four_devices(name, size, overrides):
  assert jax.device_count() == 4
  mesh = parallel.create_mesh()
  model = create_model(name, CLASSES, bn_axis_name=parallel.DATA_AXIS,
                       **overrides)
  schedule = create_lr_schedule(
      ml_collections.ConfigDict({"name": "constant"}), 0.05, 10, 1)
  tx = create_optimizer(ml_collections.ConfigDict(
      {"name": "sgd", "momentum": 0.9, "weight_decay": 1e-4}), schedule)
  state = initial_state(model, tx, size, seed=0)
  rng = np.random.default_rng(0)
  batch = {"image": rng.standard_normal((8, size, size, 3)).astype(
               np.float32),
           "label": np.arange(8, dtype=np.int32) % CLASSES}
  step = make_train_step(model, tx, schedule, mesh)
  new, metrics = jax.device_get(step(
      parallel.replicate(mesh, state),
      parallel.host_batch_to_global(mesh, batch)))
  assert np.isfinite(metrics["loss_sum"]) and metrics["count"] == 8
  moved = traverse_util.flatten_dict(jax.tree.map(
      lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
      new.params, jax.device_get(state.params)), sep="/")
  still = [k for k, v in moved.items() if k.endswith("kernel") and not v]
  assert not still, still
  assert isinstance(new, TrainState)
