"""Gradient-direction probe: the closed-form curve of a linear model with a
squared loss, 1 vs 4 devices, the ResNet split, and the result files."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax import parallel
from gcp_jax.analysis import gradient_probe as gp
from tests.analysis import tiny


def _squared_error(outputs, targets):
  return jnp.sum(jnp.square(outputs - targets), axis=-1)


def _linear_split():
  """base: X = inputs @ A; rest: outputs = X @ W (A, W in the variables)."""
  return gp.Split(
      base=lambda v, x, mode, key: x @ v["params"]["A"],
      rest=lambda v, x, mode, key: x @ v["params"]["W"])


def _analytic_curve(a, w, inputs, targets, etas):
  """L(X + eta g0) and ||g(X + eta g0) - g0|| in closed form.

  L(X) = (1/B) ||X W - T||^2, g0 = (2/B) R W^T with R = X W - T, so
  X + eta g0 has residual R (I + c M), c = 2 eta / B, M = W^T W, and the
  gradient changes by (2/B) c R M W^T.
  """
  b = inputs.shape[0]
  r = inputs @ a @ w - targets
  m = w.T @ w
  eye = np.eye(m.shape[0])
  losses = np.array([np.sum((r @ (eye + 2 * e / b * m)) ** 2) / b
                     for e in etas])
  changes = np.array([(2 / b) * (2 * e / b) * np.linalg.norm(r @ m @ w.T)
                      for e in etas])
  return losses, changes, np.sum(r ** 2) / b, 2 / b * np.linalg.norm(r @ w.T)


@pytest.mark.parametrize("num_devices", [1, 4])
def test_linear_model_matches_the_closed_form(num_devices):
  rng = np.random.default_rng(0)
  a, w = rng.standard_normal((6, 5)), rng.standard_normal((5, 3))
  inputs, targets = rng.standard_normal((8, 6)), rng.standard_normal((8, 3))
  etas = gp.default_etas()
  with jax.enable_x64(True):
    probe = gp.make_gradient_probe(_linear_split(), bn_mode="running",
                                   mesh=parallel.create_mesh(num_devices, explicit=False),
                                   loss_fn=_squared_error, eta_batch_size=7)
    result = probe({"params": {"A": a, "W": w}}, inputs, targets,
                   jax.random.key(0), step=3)
  losses, changes, base_loss, g0_norm = _analytic_curve(a, w, inputs,
                                                        targets, etas)
  np.testing.assert_allclose(result.losses, losses, rtol=1e-10)
  np.testing.assert_allclose(result.grad_changes, changes, rtol=1e-10)
  np.testing.assert_allclose(result.base_loss, base_loss, rtol=1e-12)
  np.testing.assert_allclose(result.base_grad_norm, g0_norm, rtol=1e-12)
  assert (result.bn_mode, result.batch_size, result.num_devices,
          result.step) == ("running", 8, num_devices, 3)


def test_default_grid_is_the_reference_grid():
  etas = gp.default_etas()
  assert etas.shape == (50,) and etas[0] == 0.1 and etas[-1] == 75.0
  np.testing.assert_allclose(np.diff(etas), (75.0 - 0.1) / 49)


def test_resnet_probe_is_the_same_on_four_devices():
  """Synchronised BN, batch statistics (the reference's mode): the
  global-batch probe does not depend on the device count (the global mean
  loss and its global gradient)."""
  bn_mode = "batch"
  model, variables = tiny.tiny_resnet("resnet_tiny_cov")
  batch = tiny.image_batches(1, 8)[0]
  etas = np.linspace(0.1, 75.0, 6)
  split = gp.resnet_split(model)
  one = gp.make_gradient_probe(split, bn_mode=bn_mode, etas=etas)(
      variables, batch["image"], batch["label"], jax.random.key(0))
  # four devices, with the arrays placed as the training loop holds them
  mesh = parallel.create_mesh(4)
  placed_vars = parallel.replicate(mesh, variables)
  placed = parallel.host_batch_to_global(mesh, batch)
  four = gp.make_gradient_probe(split, bn_mode=bn_mode, etas=etas,
                                mesh=mesh)(
      placed_vars, placed["image"], placed["label"], jax.random.key(0))
  assert (one.num_devices, four.num_devices) == (1, 4)
  np.testing.assert_allclose(four.losses, one.losses, rtol=1e-5)
  np.testing.assert_allclose(four.grad_changes, one.grad_changes, rtol=1e-4)
  np.testing.assert_allclose(four.base_grad_norm, one.base_grad_norm,
                             rtol=1e-5)
  # the first point is a tiny step: its loss is close to L(X)
  assert abs(one.losses[0] - one.base_loss) < 0.05 * one.base_loss
  assert np.all(np.isfinite(one.losses)) and one.bn_mode == bn_mode


def test_results_round_trip_and_band(tmp_path):
  results = [gp.GradientProbeResult(
      np.array([0.1, 1.0, 2.0]), np.array([2.0, 1.5, 3.0]),
      np.array([0.01, 0.2, 0.1]), 2.1, 0.3, "batch", 8, 4, step)
      for step in (0, 500)]
  path = str(tmp_path / "probes.json")
  gp.save_results(results, path)
  loaded = gp.load_results(path)
  assert [r.step for r in loaded] == [0, 500]
  np.testing.assert_array_equal(loaded[1].losses, results[1].losses)
  band = gp.lipschitz_band(loaded[1])
  assert (band.loss_min, band.loss_max, band.grad_change_min,
          band.grad_change_max, band.step) == (1.5, 3.0, 0.01, 0.2, 500)
