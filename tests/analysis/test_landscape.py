"""Landscapes: analytic 1-D grids, interpolation endpoints, sharded
evaluation, the cache key and resuming an interrupted grid."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax import parallel
from gcp_jax.analysis import evaluation, landscape, landscape_cache
from tests.analysis import tiny


def _ce_and_accuracy(logits, labels):
  """float64 numpy mean cross-entropy and top-1 accuracy."""
  logits = np.asarray(logits, np.float64)
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return (-np.mean(logp[np.arange(len(labels)), labels]),
          np.mean(np.argmax(logits, -1) == labels))


@pytest.fixture(scope="module")
def linear():
  model = tiny.Linear()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), False)
  bias = np.random.default_rng(0).normal(0.0, 0.1, 10).astype(np.float32)
  variables = {"params": {"fc": dict(variables["params"]["fc"],
                                     bias=jnp.asarray(bias))}}
  return model, variables, tiny.image_batches(2, 8)


def test_1d_random_grid_equals_the_analytic_loss(linear):
  model, variables, batches = linear
  alphas = np.linspace(-1.0, 1.0, 5)
  surface = landscape.random_surface(0, variables, [alphas], one_d="filter")
  result = landscape.compute_landscape(model, surface, batches,
                                       bn_mode="running")
  x = np.concatenate([b["image"] for b in batches]).reshape(16, -1)
  y = np.concatenate([b["label"] for b in batches])
  w, d = variables["params"]["fc"], surface.directions[0]["params"]["fc"]
  assert np.any(np.asarray(d["bias"]) != 0)
  for i, a in enumerate(alphas):
    kernel = np.asarray(w["kernel"], np.float64) + a * np.asarray(d["kernel"])
    bias = np.asarray(w["bias"], np.float64) + a * np.asarray(d["bias"])
    loss, acc = _ce_and_accuracy(x @ kernel + bias, y)
    np.testing.assert_allclose(result.loss[i], loss, rtol=1e-5)
    assert result.accuracy[i] == acc
  assert result.complete and result.new_points == 5
  assert result.bn_mode == "running"


def test_interpolation_endpoints_are_the_two_models():
  model, var_a = tiny.tiny_resnet("resnet_tiny_cov", seed=0)
  _, var_b = tiny.tiny_resnet("resnet_tiny_cov", seed=1)
  batches = tiny.image_batches(2, 8)
  surface = landscape.interpolation_surface(var_a, var_b, [0.0, 0.5, 1.0])
  result = landscape.compute_landscape(model, surface, batches,
                                       bn_mode="running")
  x = np.concatenate([b["image"] for b in batches])
  y = np.concatenate([b["label"] for b in batches])
  for i, variables in ((0, var_a), (2, var_b)):
    loss, acc = _ce_and_accuracy(tiny.jitted_apply(model)(variables, x), y)
    np.testing.assert_allclose(result.loss[i], loss, rtol=1e-5)
    assert result.accuracy[i] == acc
  assert result.loss[0] != result.loss[2]


@pytest.mark.parametrize("bn_mode", ["running", "batch"])
def test_sharded_evaluation_equals_single_device(bn_mode):
  model, variables = tiny.tiny_resnet("resnet_tiny_isqrt")
  batches = tiny.image_batches(2, 8)
  if bn_mode == "running":   # padded examples count nowhere
    batches[1]["mask"] = np.array([1, 1, 1, 1, 1, 0, 0, 0], np.float32)
  key = jax.random.key(0)
  one, four = [evaluation.make_evaluator(model, bn_mode=bn_mode,
                                         mesh=parallel.create_mesh(n, explicit))(
                                             variables, batches, key)
               for n, explicit in ((1, False), (4, True))]
  np.testing.assert_allclose(four, one, rtol=1e-5)
  if bn_mode == "running":
    x = np.concatenate([batches[0]["image"], batches[1]["image"][:5]])
    y = np.concatenate([batches[0]["label"], batches[1]["label"][:5]])
    loss, acc = _ce_and_accuracy(tiny.jitted_apply(model)(variables, x), y)
    np.testing.assert_allclose(one, (loss, acc), rtol=1e-5)


def test_batch_mode_rejects_padded_batches(linear):
  model, variables, batches = linear
  padded = [dict(batches[0], mask=np.array([1] * 7 + [0], np.float32))]
  with pytest.raises(ValueError, match="padded"):
    evaluation.make_evaluator(model, bn_mode="batch")(
        variables, padded, jax.random.key(0))


def test_cache_key_changes_with_every_ingredient(linear):
  model, variables, batches = linear
  axes = [np.linspace(-1, 1, 3)]
  key = jax.random.key(0)

  def key_of(model=model, surface=None, batches=batches, bn_mode="running",
             rng=key, checkpoint_id="ckpt/1", data_id="test[:16]"):
    surface = surface or landscape.random_surface(0, variables, axes)
    return landscape_cache.cache_key(landscape.landscape_ingredients(
        model, surface, batches, bn_mode, rng, checkpoint_id, data_id))

  other_weights = jax.tree.map(lambda x: x + 1e-3, variables)
  other_batches = [dict(batches[0]), batches[1]]
  other_batches[0]["label"] = np.roll(batches[0]["label"], 1)
  variants = [
      key_of(),
      key_of(model=tiny.Linear(num_classes=11)),
      key_of(surface=landscape.random_surface(1, variables, axes)),
      key_of(surface=landscape.random_surface(0, other_weights, axes)),
      key_of(surface=landscape.random_surface(
          0, variables, [np.linspace(-1, 1, 4)])),
      key_of(surface=landscape.random_surface(
          0, variables, [np.linspace(-1, 1.0001, 3)])),
      key_of(surface=landscape.random_surface(0, variables, axes,
                                              one_d="copy")),
      key_of(surface=landscape.interpolation_surface(
          variables, other_weights, axes[0])),
      key_of(batches=other_batches),
      key_of(bn_mode="batch"),
      key_of(rng=jax.random.key(1)),
      key_of(checkpoint_id="ckpt/2"),
      key_of(data_id="test[16:32]"),
  ]
  assert len(set(variants)) == len(variants)
  assert key_of() == variants[0]      # deterministic


class _CrashingBatches(list):
  """Batches whose `crash_at`-th iteration raises (a simulated crash)."""

  def __init__(self, batches, crash_at):
    super().__init__(batches)
    self.iterations, self.crash_at = 0, crash_at

  def __iter__(self):
    self.iterations += 1
    if self.iterations == self.crash_at:
      raise RuntimeError("simulated crash")
    return super().__iter__()


def test_interrupted_2d_grid_resumes_without_recomputing(linear, tmp_path):
  model, variables, batches = linear
  surface = landscape.random_surface(
      3, variables, [np.linspace(-1, 1, 3), np.linspace(-0.5, 0.5, 3)])
  run = lambda data, **kw: landscape.compute_landscape(  # noqa: E731
      model, surface, data, bn_mode="running", cache_dir=str(tmp_path),
      checkpoint_id="linear/0", data_id="random", **kw)

  # iteration 1 fingerprints the data, iterations 2-4 evaluate three points
  with pytest.raises(RuntimeError, match="simulated crash"):
    run(_CrashingBatches(batches, crash_at=5))
  files = os.listdir(tmp_path)
  assert len(files) == 1 and files[0].startswith("landscape-")
  partial = run(batches, max_new_points=2)
  assert partial.new_points == 2 and partial.done.sum() == 5
  assert not partial.complete
  assert np.array_equal(partial.done.ravel(), [1] * 5 + [0] * 4)
  full = run(batches)
  assert full.new_points == 4 and full.complete
  np.testing.assert_array_equal(full.loss.ravel()[:5],
                                partial.loss.ravel()[:5])
  again = run(batches)
  assert again.new_points == 0
  np.testing.assert_array_equal(again.loss, full.loss)
  np.testing.assert_array_equal(again.accuracy, full.accuracy)
  fresh = landscape.compute_landscape(model, surface, batches,
                                      bn_mode="running")
  np.testing.assert_allclose(fresh.loss, full.loss, rtol=1e-6)
  assert len(os.listdir(tmp_path)) == 1
