"""Linear probe of second-order descriptors on fixed local features.

Compares the representations of `gcp_jax.ops` without training a backbone:
each image is described by its local features (every k x k patch, plus the
patch position, as in region-covariance descriptors), the features are pooled
by first-order averaging (`gap`) or by a registered second-order
representation (`isqrt`, `eig`, `none`, ...), and a multinomial logistic
regression is fitted on the standardised descriptors. Held-out accuracy says
how much class information each pooling keeps.

Synopsis:
  results = run_probe(config)     # {name: ProbeResult}, for config.representations
"""

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from gcp_jax import ops
from gcp_jax.data.digits import NUM_CLASSES, load_digits_split


@dataclasses.dataclass(frozen=True)
class ProbeResult:
  """Outcome of one probe: descriptor size, accuracies, wall time (s)."""
  representation: str
  descriptor_dim: int
  train_accuracy: float
  test_accuracy: float
  seconds: float


def local_features(images: jax.Array, patch_size: int) -> jax.Array:
  """Every patch of each image plus its (row, col) position in [0, 1].

  Args:
    images: (B, H, W, 1).
    patch_size: k; patches are taken without padding.

  Returns:
    (B, H - k + 1, W - k + 1, k * k + 2).
  """
  patches = lax.conv_general_dilated_patches(
      images, (patch_size, patch_size), (1, 1), "VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  b, h, w, _ = patches.shape
  rows, cols = jnp.meshgrid(jnp.linspace(0.0, 1.0, h),
                            jnp.linspace(0.0, 1.0, w), indexing="ij")
  pos = jnp.broadcast_to(jnp.stack([rows, cols], -1)[None], (b, h, w, 2))
  return jnp.concatenate([patches, pos], axis=-1)


def describe(features: jax.Array, name: str, options: dict[str, Any]
             ) -> jax.Array:
  """(B, H, W, C) -> (B, D) descriptors: `gap` or a registered representation."""
  if name == "gap":
    return jnp.mean(features, axis=(1, 2))
  return ops.get_representation(name)(features, **options)


def _logits(params, x):
  weights, bias = params
  return x @ weights + bias[None, :]


def fit_logistic_regression(x: np.ndarray, y: np.ndarray, steps: int,
                            learning_rate: float, weight_decay: float,
                            seed: int) -> tuple[jax.Array, jax.Array]:
  """Full-batch multinomial logistic regression with Adam and l2 decay.

  Returns:
    (weights (D, NUM_CLASSES), bias (NUM_CLASSES,)).
  """
  params = (jax.random.normal(jax.random.key(seed),
                              (x.shape[1], NUM_CLASSES)) * 1e-3,
            jnp.zeros(NUM_CLASSES))
  tx = optax.adamw(learning_rate, weight_decay=weight_decay)

  def loss(params):
    return optax.softmax_cross_entropy_with_integer_labels(
        _logits(params, x), y).mean()

  def step(carry, _):
    params, opt_state = carry
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  (params, _), _ = jax.jit(lambda c: lax.scan(step, c, length=steps))(
      (params, tx.init(params)))
  return params


def _accuracy(params, x, y) -> float:
  return float(np.mean(np.argmax(_logits(params, x), -1) == y))


def run_probe(config) -> dict[str, ProbeResult]:
  """Runs the probe for every name in `config.representations`.

  Args:
    config: an `ml_collections.ConfigDict` with `representations`,
      `representation_options` (name -> kwargs), `patch_size`,
      `test_fraction`, `seed` and `probe` (`steps`, `learning_rate`,
      `weight_decay`).

  Returns:
    name -> `ProbeResult`, in the order of `config.representations`.
  """
  split = load_digits_split(config.test_fraction, config.seed)
  train_feats = local_features(jnp.asarray(split.train_images),
                               config.patch_size)
  test_feats = local_features(jnp.asarray(split.test_images),
                              config.patch_size)
  results = {}
  for name in config.representations:
    start = time.perf_counter()
    options = dict(config.representation_options.get(name, {}))
    train_x = np.asarray(describe(train_feats, name, options))
    test_x = np.asarray(describe(test_feats, name, options))
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    params = fit_logistic_regression(
        train_x, split.train_labels, config.probe.steps,
        config.probe.learning_rate, config.probe.weight_decay, config.seed)
    results[name] = ProbeResult(
        name, train_x.shape[1],
        _accuracy(params, train_x, split.train_labels),
        _accuracy(params, test_x, split.test_labels),
        time.perf_counter() - start)
  return results


def format_results(results: dict[str, ProbeResult]) -> str:
  """A plain-text table of probe results."""
  lines = [f"{'representation':>14} {'dim':>6} {'train':>7} {'test':>7} "
           f"{'sec':>6}"]
  lines += [f"{r.representation:>14} {r.descriptor_dim:>6} "
            f"{r.train_accuracy:7.4f} {r.test_accuracy:7.4f} {r.seconds:6.1f}"
            for r in results.values()]
  return "\n".join(lines)
