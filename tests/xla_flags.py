"""XLA_FLAGS of the test processes and of the main.py / notebook-kernel
subprocesses the tests start.

`--xla_cpu_use_fusion_emitters=false` compiles fusions with XLA:CPU's older
elemental emitters instead of its MLIR fusion emitters: the same programs,
compiled markedly faster. Tests compile far more than they compute, so the
whole suite gains (measurements: benchmarks/RESULTS.md, "Numbers from
library and test docstrings").

The two kinds of emitters can round the same computation differently. A
test that compares two different programs bit for bit (e.g. a step with and
without extra outputs) compiles both with `compile_with_default_emitters`.
"""

import os
from typing import Any

FUSION_EMITTERS = "xla_cpu_use_fusion_emitters"
FAST_COMPILE_FLAGS = (f"--{FUSION_EMITTERS}=false",)


def xla_flags(devices: int | None, user_flags: str = "") -> str:
  """`user_flags` + the fast-compile flags (those the user did not set
  already) + `devices` forced CPU devices (None: XLA's default, 1)."""
  flags = [user_flags] if user_flags else []
  flags += [f for f in FAST_COMPILE_FLAGS
            if f.split("=")[0] not in user_flags]
  if devices is not None:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  return " ".join(flags)


def subprocess_env(devices: int | None, **extra: str) -> dict[str, str]:
  """This process's environment (JAX settings of conftest included) with
  XLA_FLAGS for `devices` CPU devices and the `extra` variables."""
  return dict(os.environ, XLA_FLAGS=xla_flags(devices), **extra)


def compile_with_default_emitters(jitted: Any, *args: Any) -> Any:
  """`jitted` (a `jax.jit` function) compiled for `args` with XLA:CPU's
  default (MLIR) fusion emitters, whatever FAST_COMPILE_FLAGS say. The
  option is merged with those `jitted` was built with. Returns the
  `jax.stages.Compiled` program. (This module imports no JAX: conftest
  imports it before setting the JAX environment variables.)"""
  return jitted.lower(*args).compile({FUSION_EMITTERS: True})
