"""`gcp_jax.xla_options`: convolutions leave YNNPACK, dots stay, a user's own
XLA_FLAGS win."""

import re

import jax
import jax.numpy as jnp
from jax import lax

from gcp_jax import xla_options


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


def test_convolutions_skip_ynnpack_and_dots_keep_it(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "")
  default = _ynn_fusion_bodies(_compiled_hlo(jax.jit))
  ours = _ynn_fusion_bodies(_compiled_hlo(xla_options.jit))
  # XLA's default hands both to YNNPACK (if this fails, a new jaxlib changed
  # the default and the option should be re-measured).
  assert any("convolution(" in body for body in default)
  assert any(" dot(" in body for body in default)
  assert not any("convolution(" in body for body in ours)
  assert any(" dot(" in body for body in ours)


def test_users_xla_flags_take_precedence(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
  assert xla_options.compiler_options() == {
      xla_options.YNN_FUSION_FLAG:
          xla_options.YNN_FUSIONS_WITHOUT_CONVOLUTION}
  monkeypatch.setenv(
      "XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
  assert xla_options.compiler_options() is None
