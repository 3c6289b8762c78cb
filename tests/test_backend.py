"""`gcp_jax.backend`: each backend's choices apply on that backend only.

* the CPU and GPU variants of a model (1 x 1 convolutions as dots or as
  `nn.Conv`) have identical variable trees and give the same outputs and
  gradients;
* each backend's XLA options are real XLA options and reach `jax.jit` on
  that backend only; a user's own XLA_FLAGS win;
* on the CPU, convolutions leave YNNPACK and dots keep it.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

from gcp_jax import backend
from gcp_jax.models import heads, layers, resnet

RNG = np.random.default_rng(5)


def _bottleneck_gcp_resnet() -> nn.Module:
  """A small Bottleneck ResNet with a GCP head: strided and unstrided 1 x 1
  convolutions in the blocks, the shortcuts and the reduction block."""
  return resnet.ResNet(
      stage_sizes=(1, 1, 1, 1), block_cls=resnet.Bottleneck,
      head=heads.GCPHead(10, dim=8, representation="isqrt",
                         representation_options=(("num_iters", 5),)),
      width=4, small_input=True)


def _init_and_grads(model: nn.Module, images, labels):
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, False))(
      images)

  @jax.jit
  def loss_and_grads(params):
    def loss(p):
      logits, _ = model.apply({"params": p,
                               "batch_stats": variables["batch_stats"]},
                              images, True, mutable=["batch_stats"])
      onehot = jax.nn.one_hot(labels, logits.shape[-1])
      return -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), -1)), (
          logits)
    return jax.value_and_grad(loss, has_aux=True)(params)

  (_, logits), grads = loss_and_grads(variables["params"])
  return variables, logits, grads


def test_cpu_and_gpu_layers_same_variables_outputs_and_gradients():
  model = _bottleneck_gcp_resnet()
  images = jnp.asarray(RNG.standard_normal((4, 16, 16, 3)), jnp.float32)
  labels = jnp.asarray(RNG.integers(0, 10, 4))
  results = {}
  for name in (backend.CPU, backend.GPU):
    with backend.assume(name):
      results[name] = jax.device_get(_init_and_grads(model, images, labels))
      kinds = {type(m).__name__ for m in _conv_modules(model, images)}
    assert kinds == ({"PointwiseConv", "Conv"} if name == backend.CPU
                     else {"Conv"})
  (v_cpu, out_cpu, g_cpu), (v_gpu, out_gpu, g_gpu) = results.values()
  assert jax.tree.structure(v_cpu) == jax.tree.structure(v_gpu)
  for a, b in zip(jax.tree.leaves(v_cpu), jax.tree.leaves(v_gpu)):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)   # same initialisers, same RNG path
  np.testing.assert_allclose(out_cpu, out_gpu, rtol=1e-4, atol=1e-5)
  assert jax.tree.structure(g_cpu) == jax.tree.structure(g_gpu)
  for a, b in zip(jax.tree.leaves(g_cpu), jax.tree.leaves(g_gpu)):
    np.testing.assert_allclose(a, b, rtol=1e-4,
                               atol=5e-5 * float(np.abs(b).max()))


def _conv_modules(model: nn.Module, images) -> list[nn.Module]:
  """The convolution modules the model builds on the current backend."""
  found = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, (nn.Conv, layers.PointwiseConv)):
      found.append(context.module)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, False), images)
  return found


def test_unknown_backend_is_an_error():
  with pytest.raises(ValueError, match="Unknown backend 'cuda'.*'gpu'"):
    with backend.assume("cuda"):
      pass


@pytest.mark.parametrize("name", [backend.CPU, backend.GPU])
def test_options_are_real_xla_options(name, monkeypatch):
  """XLA rejects an unknown option name at compile time (on any backend),
  so compiling with another backend's options checks their names."""
  monkeypatch.setenv("XLA_FLAGS", "")
  options = backend.compiler_options(name)
  assert options
  x = jnp.ones((8, 8))
  jax.jit(lambda a: a @ a, compiler_options=options).lower(x).compile()
  with pytest.raises(Exception, match="No such compile option"):
    jax.jit(lambda a: a @ a, compiler_options={
        k + "_misspelt": v for k, v in options.items()}).lower(x).compile()


def test_each_backend_gets_its_own_options_only(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
  assert backend.compiler_options(backend.CPU) == {
      backend.YNN_FUSION_FLAG: backend.YNN_FUSIONS_WITHOUT_CONVOLUTION}
  assert backend.compiler_options(backend.GPU) == {
      backend.TRITON_GEMM_FLAG: False}
  assert backend.compiler_options(backend.TPU) is None
  seen = []
  monkeypatch.setattr(jax, "jit", lambda fun, **kw: seen.append(
      kw["compiler_options"]))
  for name in (backend.CPU, backend.GPU, backend.TPU):
    with backend.assume(name):
      backend.jit(lambda a: a)
  assert seen == [backend.compiler_options(n)
                  for n in (backend.CPU, backend.GPU, backend.TPU)]
  backend.jit(lambda a: a)   # no assume: the default backend's options
  assert seen[-1] == backend.compiler_options(backend.platform())


def test_users_xla_flags_take_precedence(monkeypatch):
  monkeypatch.setenv(
      "XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot "
      "--xla_gpu_enable_triton_gemm=true")
  assert backend.compiler_options(backend.CPU) is None
  assert backend.compiler_options(backend.GPU) is None


def _ynn_fusion_bodies(hlo: str) -> list[str]:
  """The bodies of the computations called by YNNPACK fusions."""
  called = re.findall(r"calls=(%[\w.\-]+), .*\"kind\":\"__ynn_fusion\"", hlo)
  bodies = []
  for name in called:
    start = hlo.index(f"\n{name} ")
    bodies.append(hlo[start:hlo.index("\n}", start)])
  return bodies


def _conv_and_dot(x, w, a):
  y = lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y, a @ a


def _compiled_hlo(jit_fn) -> str:
  x = jnp.ones((2, 16, 16, 32))
  w = jnp.ones((3, 3, 32, 32))
  a = jnp.ones((256, 256))
  return jit_fn(_conv_and_dot).lower(x, w, a).compile().as_text()


def test_cpu_convolutions_skip_ynnpack_and_dots_keep_it(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "")
  default = _ynn_fusion_bodies(_compiled_hlo(jax.jit))
  with backend.assume(backend.CPU):
    ours = _ynn_fusion_bodies(_compiled_hlo(backend.jit))
  # XLA's default hands both to YNNPACK (if this fails, a new jaxlib changed
  # the default and the option should be re-measured).
  assert any("convolution(" in body for body in default)
  assert any(" dot(" in body for body in default)
  assert not any("convolution(" in body for body in ours)
  assert any(" dot(" in body for body in ours)


def test_keep_freed_memory_wanted_on_cpu_only(monkeypatch):
  monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert backend.keep_freed_memory_wanted()
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  assert not backend.keep_freed_memory_wanted()
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
  assert not backend.keep_freed_memory_wanted()
