"""gcp-jax side helpers of the converter tests."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gcp_jax.models import create_model

# Logits must agree to 1e-4 of their largest magnitude (float32 on both
# sides; elementwise relative error is meaningless for logits near 0).
RELATIVE_TOLERANCE = 1e-4


def model_and_template(name: str, num_classes: int, image_size: int,
                       **overrides):
  """(model, abstract variables) without running an initialisation."""
  model = create_model(name, num_classes, **overrides)
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  template = jax.eval_shape(
      lambda: model.init(jax.random.key(0), images, False))
  return model, template


@functools.cache
def _apply(model):
  return jax.jit(lambda v, x: model.apply(v, x, False))


def jax_logits(model, variables, images: np.ndarray) -> np.ndarray:
  """Eval-mode logits, `model.apply(variables, x, False)`, NHWC input."""
  return np.asarray(_apply(model)(variables, images))


def assert_logits_close(actual: np.ndarray, expected: np.ndarray) -> None:
  assert actual.shape == expected.shape
  scale = np.abs(expected).max()
  error = np.abs(actual - expected).max()
  assert error <= RELATIVE_TOLERANCE * scale, (error, scale)


def random_images(size: int, batch: int = 2, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(
      size=(batch, size, size, 3)).astype(np.float32)


def flat(variables) -> dict:
  """'params/stem/conv1/kernel' -> leaf."""
  return {"/".join(str(k.key) for k in path): leaf for path, leaf in
          jax.tree_util.tree_leaves_with_path(variables)}
