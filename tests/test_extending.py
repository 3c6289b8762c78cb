"""docs/extending.md, followed step by step: a toy representation and a toy
backbone registered as the guide says train through the real loop (with
the gradient probe, which needs the stem split), and the guide's config
example builds."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from configs.common import model_config
from gcp_jax import ops
from gcp_jax.model_config import ModelConfig
from gcp_jax.models import layers, registry
from gcp_jax.ops import linalg
from gcp_jax.ops.covariance import covariance
from gcp_jax.ops.representations import REPRESENTATIONS, Representation
from gcp_jax.ops.vectorize import triu_vec
from gcp_jax.train import loop
from gcp_jax.train.optim import create_optimizer
from gcp_jax.train.probe_hook import PROBE_FILE
from gcp_jax.train.schedules import create_lr_schedule
from tests.train.tiny import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = os.path.join(ROOT, "docs", "extending.md")


def trace_normalize(mat: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Step 1's ops function: (B, C, C) -> Sigma / (tr Sigma + eps)."""
  mat = linalg.upcast(mat)
  return mat / (linalg.batch_trace(mat)[:, None, None] + eps)


class ConvBNReLU(nn.Module):
  features: int
  stride: int = 1
  dtype: jnp.dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = layers.conv(self.features, 3, self.stride, dtype=self.dtype,
                    name="conv")(x)
    x = layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype,
                          name="bn")(x)
    return nn.relu(x)


class ToyCNN(nn.Module):
  """The backbone contract: head, dtype, bn_axis_name, last_stride; stem
  and from_stem."""
  head: nn.Module
  width: int = 8
  last_stride: int = 1
  dtype: jnp.dtype = jnp.float32
  bn_axis_name: str | None = None

  def setup(self):
    self.stem_block = ConvBNReLU(self.width, 1, self.dtype, self.bn_axis_name)
    self.body = ConvBNReLU(2 * self.width, self.last_stride, self.dtype,
                           self.bn_axis_name)

  def stem(self, x: jax.Array, train: bool) -> jax.Array:
    return self.stem_block(x, train)

  def from_stem(self, h: jax.Array, train: bool) -> jax.Array:
    return self.head(self.body(h, train), train)

  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return self.from_stem(self.stem(x, train), train)


@pytest.fixture
def registered(monkeypatch):
  """Step 2 of each recipe: one entry in each table."""
  monkeypatch.setitem(REPRESENTATIONS, "trace_norm", Representation(
      "trace_norm", covariance, trace_normalize, triu_vec))
  monkeypatch.setitem(registry.BACKBONES, "toy_cnn", registry.Backbone(
      ToyCNN, "map"))


def test_toy_representation_is_its_equation(registered):
  x = np.random.default_rng(0).normal(size=(2, 3, 3, 4))
  got = ops.get_representation("trace_norm")(jnp.asarray(x, jnp.float32),
                                             eps=0.5)
  flat = x.reshape(2, 9, 4) - x.reshape(2, 9, 4).mean(1, keepdims=True)
  cov = np.einsum("bmi,bmj->bij", flat, flat) / 9
  want = cov / (np.trace(cov, axis1=1, axis2=2)[:, None, None] + 0.5)
  rows, cols = np.triu_indices(4)
  np.testing.assert_allclose(got, want[:, rows, cols], rtol=1e-5, atol=1e-7)


def test_toy_model_trains_through_the_loop_with_the_probe(
    registered, tmp_path):
  config = tiny_config(str(tmp_path / "digits"), num_epochs=1)
  config.model = model_config(ModelConfig(
      backbone="toy_cnn", head="gcp", representation="trace_norm", dim=8,
      representation_options={"eps": 1e-3},
      backbone_options={"width": 4}))
  config.gradient_probe.every_steps = 10
  config.gradient_probe.num_etas = 2
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(config, workdir)
  model = loop.build_model(config, 10)
  assert isinstance(model, ToyCNN) and model.width == 4
  assert model.head.representation_options == (("eps", 1e-3),)
  losses = [h["loss"] for h in result.history]
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert 0.0 <= result.eval_metrics["top1"] <= 1.0
  assert os.path.exists(os.path.join(workdir, PROBE_FILE))


def test_toy_backbone_takes_the_gap_stride(registered):
  model = registry.build_model(ModelConfig(backbone="toy_cnn", head="gap"),
                               10)
  assert model.last_stride == 2


def test_the_guides_config_example_builds():
  with open(GUIDE) as f:
    blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
  (source,) = [b for b in blocks if "def get_config" in b]
  namespace: dict = {}
  exec(compile(source, GUIDE, "exec"), namespace)
  config = namespace["get_config"]()
  model = loop.build_model(config, 1000)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 224, 224, 3)), False))
  assert shapes["params"]["head"]["fc"]["kernel"].shape == (32896, 1000)
  schedule = create_lr_schedule(config.schedule, config.learning_rate, 10,
                                config.num_epochs)
  jax.eval_shape(create_optimizer(config.optimizer, schedule).init,
                 shapes["params"])
