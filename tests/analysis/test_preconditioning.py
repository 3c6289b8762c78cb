"""Pre-conditioning view: the decomposed head reproduces the model, and the
per-sample gradients match references computed without the code's
custom-VJP path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax import ops
from gcp_jax.analysis import preconditioning as pc
from gcp_jax.models import create_model, heads
from tests.analysis import tiny


@pytest.fixture(scope="module")
def isqrt():
  model, variables = tiny.tiny_resnet("resnet_tiny_isqrt", sync_bn=False)
  batch = tiny.image_batches(1, 12)[0]
  return model, variables, batch["image"], batch["label"]


def _features(model, variables, images):
  _, state = jax.jit(lambda v, x: model.apply(
      v, x, False, mutable=["intermediates"]))(variables, images)
  return state["intermediates"]["layer4_out"][0]


def _kernel(variables):
  return variables["params"]["head"]["reduce"]["conv_reduce"]["kernel"]


@pytest.mark.parametrize("backward", ["model", "identity_backward"])
def test_decomposed_head_reproduces_the_model_logits(isqrt, backward):
  model, variables, images, _ = isqrt
  head = pc.head_function(model, variables,
                          _features(model, variables, images),
                          bn_mode="running", key=jax.random.key(0),
                          backward=backward)
  np.testing.assert_allclose(head(_kernel(variables)),
                             tiny.jitted_apply(model)(variables, images),
                             rtol=1e-5, atol=1e-6)


def test_model_gradients_average_to_the_full_model_gradient(isqrt):
  model, variables, images, labels = isqrt
  grads = pc.per_sample_gradients(model, variables, images, labels,
                                  bn_mode="running", key=jax.random.key(0),
                                  backwards=("model",))["model"]

  def mean_loss(params):
    logits = model.apply({**variables, "params": params}, images, False)
    return jnp.mean(ops.cross_entropy(logits, labels))
  want = _kernel({"params": jax.jit(jax.grad(mean_loss))(
      variables["params"])})
  np.testing.assert_allclose(grads.mean(0), np.ravel(want), rtol=1e-4,
                             atol=1e-7)


def test_identity_backward_is_the_covariance_backward_of_dl_dn(isqrt):
  """Reference: G_i = d loss_i / dN_i at the model's N_i = f(S_i), then
  g~_i = (dS_i/dW)^T G_i by a plain VJP of the covariance."""
  model, variables, images, labels = isqrt
  got = pc.per_sample_gradients(model, variables, images, labels,
                                bn_mode="running", key=jax.random.key(0),
                                backwards=("identity_backward",))
  features = _features(model, variables, images)
  head = model.head
  rep = ops.get_representation(head.representation)
  p = variables["params"]["head"]
  reduce_vars = {"params": p["reduce"],
                 "batch_stats": variables["batch_stats"]["head"]["reduce"]}

  def cov_of(kernel):
    params = dict(p["reduce"], conv_reduce={"kernel": kernel})
    z = heads.ReductionBlock(head.dim).apply(
        {**reduce_vars, "params": params}, features, False)
    return ops.covariance(z)

  def losses_of(n):
    logits = ops.triu_vec(n) @ p["fc"]["kernel"] + p["fc"]["bias"][None]
    return ops.cross_entropy(logits, labels)

  cov, cov_vjp = jax.vjp(cov_of, _kernel(variables))
  n = rep.normalize(cov, **dict(head.representation_options))
  dl_dn = jax.jacrev(losses_of)(n)                  # (B, B, d, d)
  want = np.stack([np.ravel(cov_vjp(dl_dn[i])[0]) for i in range(len(labels))])
  np.testing.assert_allclose(got["identity_backward"], want, rtol=1e-4,
                             atol=1e-5 * np.abs(want).max())


def test_result_metrics_and_gram_spectrum(isqrt):
  model, variables, images, labels = isqrt
  res = pc.gradient_preconditioning(model, variables, images, labels,
                                    bn_mode="running", key=jax.random.key(0))
  grads = pc.per_sample_gradients(model, variables, images, labels,
                                  bn_mode="running", key=jax.random.key(0),
                                  backwards=("model", "identity_backward"))
  g, r = grads["model"], grads["identity_backward"]
  explicit = np.linalg.eigvalsh(g.T @ g / len(g))[::-1][:len(g)]
  np.testing.assert_allclose(res.model_spectrum, explicit, rtol=1e-6,
                             atol=1e-9 * explicit[0])
  gm, rm = g.mean(0), r.mean(0)
  np.testing.assert_allclose(res.mean_gradient_cosine,
                             gm @ rm / np.linalg.norm(gm) / np.linalg.norm(rm))
  np.testing.assert_allclose(res.mean_gradient_norm_ratio,
                             np.linalg.norm(gm) / np.linalg.norm(rm))
  assert res.per_sample_cosines.shape == (12,)
  assert (res.kernel_path, res.representation, res.reference,
          res.bn_mode, res.num_samples) == (
              "head/reduce/conv_reduce/kernel", "isqrt", "identity_backward",
              "running", 12)
  assert 1 <= res.model_effective_rank <= res.model_rank <= 12
  assert res.model_condition >= 1 and res.reference_condition >= 1


def test_no_normalisation_means_no_preconditioning():
  """Plain covariance ('cov' head): the identity backward IS the model's."""
  model, variables = tiny.tiny_resnet("resnet_tiny_cov")
  batch = tiny.image_batches(1, 8)[0]
  res = pc.gradient_preconditioning(model, variables, batch["image"],
                                    batch["label"], bn_mode="batch",
                                    key=jax.random.key(0))
  np.testing.assert_allclose(res.mean_gradient_cosine, 1.0, rtol=1e-12)
  np.testing.assert_allclose(res.mean_gradient_norm_ratio, 1.0, rtol=1e-12)
  np.testing.assert_allclose(res.per_sample_cosines, 1.0, rtol=1e-12)
  np.testing.assert_array_equal(res.model_spectrum, res.reference_spectrum)


def test_other_heads_are_rejected():
  model, variables = tiny.tiny_resnet("resnet_tiny_gap")
  batch = tiny.image_batches(1, 4)[0]
  with pytest.raises(ValueError, match="needs a ResNet with a GCPHead"):
    pc.gradient_preconditioning(model, variables, batch["image"],
                                batch["label"], bn_mode="running",
                                key=jax.random.key(0))


@pytest.mark.parametrize("overrides", [
    {"hidden_dims": (8,)}, {"reduce": False},
    {"representation": "cbp", "representation_options": {"output_dim": 16}}])
def test_gcp_heads_it_cannot_decompose_are_rejected(overrides):
  """Hidden FC layers, no reduction block, or a representation without a
  (C, C) matrix (cbp): the decomposition would compute another head."""
  model = create_model("resnet_tiny_isqrt", 10, **overrides)
  x = jnp.zeros((2, 8, 8, 3))
  variables = model.init(jax.random.key(0), x, False)
  with pytest.raises(ValueError, match="reduction block -> pool"):
    pc.head_function(model, variables, jnp.zeros((2, 1, 1, 64)),
                     bn_mode="running", key=jax.random.key(0))
