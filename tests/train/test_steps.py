"""Data parallelism: 1 device and 4 devices give the same step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax import backend, parallel
from gcp_jax.models import create_model
from gcp_jax.train.optim import create_optimizer
from gcp_jax.train.schedules import create_lr_schedule
from gcp_jax.train.state import TrainState
from gcp_jax.train.steps import make_eval_step, make_train_step
from tests.xla_flags import compile_with_default_emitters
import ml_collections


def _setup(name):
  model = create_model(name, 10, bn_axis_name=parallel.DATA_AXIS)
  schedule = create_lr_schedule(ml_collections.ConfigDict({"name": "constant"}),
                                0.1, 10, 1)
  tx = create_optimizer(ml_collections.ConfigDict({
      "name": "sgd", "momentum": 0.9, "weight_decay": 1e-4}), schedule)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), False)
  state = TrainState.create(variables["params"], variables["batch_stats"], tx,
                            seed=0)
  rng = np.random.default_rng(0)
  batch = {"image": rng.standard_normal((8, 16, 16, 3)).astype(np.float32),
           "label": rng.integers(0, 10, 8).astype(np.int32)}
  return model, tx, schedule, state, batch


# GAP adds no code path to the step that the iSQRT model (BN in the backbone
# and the reduction block, GCP head) does not exercise: -m slow.
@pytest.mark.parametrize("name", [
    "resnet_tiny_isqrt",
    pytest.param("resnet_tiny_gap", marks=pytest.mark.slow)])
def test_one_vs_four_devices_same_step(name):
  """Synchronised BN + pmean of gradients: the update equals the 1-device
  update on the same global batch."""
  model, tx, schedule, state, batch = _setup(name)
  results = []
  for n in (1, 4):
    mesh = parallel.create_mesh(n)
    step = make_train_step(model, tx, schedule, mesh)
    new, metrics = step(parallel.replicate(mesh, state),
                        parallel.host_batch_to_global(mesh, batch))
    results.append(jax.device_get((new, metrics)))
  (one, m1), (four, m4) = results
  np.testing.assert_allclose(m1["loss_sum"], m4["loss_sum"], rtol=1e-5)
  np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-4)
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  for a, b in zip(jax.tree.leaves(one.batch_stats),
                  jax.tree.leaves(four.batch_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_gpu_layers_train_and_evaluate_like_the_cpu_layers():
  """The GPU variant of the model (`nn.Conv` for 1 x 1 convolutions, the
  GPU's compile options) through the real 4-device train and eval steps:
  the same loss, update and counts as the CPU variant."""
  model, tx, schedule, state, batch = _setup("resnet_tiny_isqrt")
  mesh = parallel.create_mesh(4)
  eval_batch = dict(batch, mask=np.array([1, 1, 1, 1, 1, 1, 0, 0],
                                         np.float32))
  results = {}
  for name in (backend.CPU, backend.GPU):
    with backend.assume(name):
      new, metrics = make_train_step(model, tx, schedule, mesh)(
          parallel.replicate(mesh, state),
          parallel.host_batch_to_global(mesh, batch))
      sums = make_eval_step(model, mesh)(
          new, parallel.host_batch_to_global(mesh, eval_batch))
      results[name] = jax.device_get((new.params, metrics, sums))
  (p_cpu, m_cpu, s_cpu), (p_gpu, m_gpu, s_gpu) = results.values()
  np.testing.assert_allclose(m_gpu["loss_sum"], m_cpu["loss_sum"], rtol=1e-5)
  np.testing.assert_allclose(m_gpu["grad_norm"], m_cpu["grad_norm"],
                             rtol=1e-4)
  for a, b in zip(jax.tree.leaves(p_gpu), jax.tree.leaves(p_cpu)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert float(s_gpu["count"]) == float(s_cpu["count"]) == 6.0
  np.testing.assert_allclose(s_gpu["loss_sum"], s_cpu["loss_sum"], rtol=1e-4)


def test_eval_counts_padded_batch_exactly():
  model, _, _, state, batch = _setup("resnet_tiny_gap")
  mesh = parallel.create_mesh(4)
  batch["mask"] = np.array([1, 1, 1, 1, 1, 0, 0, 0], np.float32)
  sums = jax.device_get(make_eval_step(model, mesh)(
      parallel.replicate(mesh, state),
      parallel.host_batch_to_global(mesh, batch)))
  assert float(sums["count"]) == 5.0
  logits = model.apply({"params": state.params,
                        "batch_stats": state.batch_stats},
                       batch["image"][:5], False)
  top1 = np.sum(np.argmax(np.asarray(logits), -1) == batch["label"][:5])
  assert float(sums["top1_sum"]) == top1


def test_multi_view_eval_scores_the_mean_logits():
  """(B, V, S, S, 3) images: loss and top-1 of the mean of the V views'
  logits, each view run through the model on its own."""
  model, _, _, state, batch = _setup("resnet_tiny_isqrt")
  rng = np.random.default_rng(1)
  images = rng.standard_normal((8, 3, 16, 16, 3)).astype(np.float32)
  mesh = parallel.create_mesh(4)
  sums = jax.device_get(make_eval_step(model, mesh)(
      parallel.replicate(mesh, state), parallel.host_batch_to_global(
          mesh, {"image": images, "label": batch["label"],
                 "mask": np.ones(8, np.float32)})))
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  per_view = [np.asarray(model.apply(variables, images[:, v], False),
                         np.float64) for v in range(3)]
  logits = np.mean(per_view, axis=0)
  shifted = logits - logits.max(-1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  loss = -log_p[np.arange(8), batch["label"]].sum()
  np.testing.assert_allclose(float(sums["loss_sum"]), loss, rtol=1e-5)
  assert float(sums["top1_sum"]) == np.sum(
      np.argmax(logits, -1) == batch["label"])


def test_ema_follows_the_recurrence_and_leaves_training_unchanged():
  """3 steps with ema_decay 0.9: the weights equal, bit for bit, those of a
  run without EMA and those of a run whose average starts elsewhere, and
  ema_k = 0.9 ema_(k-1) + 0.1 w_k from ema_0 = w_0 (numpy)."""
  model, tx, schedule, state, batch = _setup("resnet_tiny_isqrt")
  mesh = parallel.create_mesh(2)
  with_ema = TrainState.create(state.params, state.batch_stats, tx, 0,
                               ema=True)
  a = parallel.replicate(mesh, state)
  b = parallel.replicate(mesh, with_ema)
  # The same weights, but an average that starts at 2 w_0 + 1: if the
  # average fed back into training, this run's weights would move apart.
  c = parallel.replicate(mesh, with_ema.replace(
      ema=jax.tree.map(lambda e: 2 * e + 1, with_ema.ema)))
  global_batch = parallel.host_batch_to_global(mesh, batch)
  # The plain and the averaging step are two programs; XLA compiles both
  # alike only with its default fusion emitters (see tests/xla_flags.py).
  plain = compile_with_default_emitters(
      make_train_step(model, tx, schedule, mesh), a, global_batch)
  averaged = compile_with_default_emitters(
      make_train_step(model, tx, schedule, mesh, ema_decay=0.9), b,
      global_batch)
  initial = jax.device_get(state.variables())
  want = initial
  for _ in range(3):
    a, _ = plain(a, global_batch)
    b, _ = averaged(b, global_batch)
    c, _ = averaged(c, global_batch)
    weights = jax.device_get(a.variables())
    want = jax.tree.map(lambda e, w: 0.9 * np.float64(e) + 0.1 * w, want,
                        weights)
  for x, w0 in zip(jax.tree.leaves(weights), jax.tree.leaves(initial)):
    assert np.max(np.abs(x - w0)) > 0  # every leaf trained
  for run in (b, c):
    for x, y in zip(jax.tree.leaves(weights),
                    jax.tree.leaves(jax.device_get(run.variables()))):
      np.testing.assert_array_equal(y, x)
  for x, y in zip(jax.tree.leaves(want),
                  jax.tree.leaves(jax.device_get(b.ema))):
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-7)


def test_mixed_batches_train_on_soft_targets():
  """With a `mix` function the loss is the soft-target cross-entropy of the
  model on the mixed images (numpy reference on the same forward)."""
  model, tx, schedule, state, batch = _setup("resnet_tiny_gap")

  def mix(key, images, labels):
    del key
    onehot = jax.nn.one_hot(labels, 10)
    return (0.7 * images + 0.3 * images[::-1],
            0.7 * onehot + 0.3 * onehot[::-1])

  mesh = parallel.create_mesh(1)
  step = make_train_step(model, tx, schedule, mesh, mix=mix)
  _, metrics = step(parallel.replicate(mesh, state),
                    parallel.host_batch_to_global(mesh, batch))
  x = batch["image"]
  unsynced = create_model("resnet_tiny_gap", 10)  # same params, no axis
  logits, _ = unsynced.apply(state.variables(), 0.7 * x + 0.3 * x[::-1],
                             True, mutable=["batch_stats"])
  logits = np.asarray(logits, np.float64)
  log_p = logits - logits.max(-1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
  targets = 0.7 * np.eye(10)[batch["label"]] + 0.3 * np.eye(10)[
      batch["label"][::-1]]
  want = -(targets * log_p).sum(-1).mean()
  got = float(metrics["loss_sum"]) / float(metrics["count"])
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_step_compiles_once():
  model, tx, schedule, state, batch = _setup("resnet_tiny_isqrt")
  mesh = parallel.create_mesh(4)
  step = make_train_step(model, tx, schedule, mesh)
  state = parallel.replicate(mesh, state)
  for _ in range(3):
    state, _ = step(state, parallel.host_batch_to_global(mesh, batch))
  assert step._cache_size() == 1
