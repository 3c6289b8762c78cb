"""XLA compiler options for the library's compiled model functions.

XLA:CPU (jaxlib 0.10.2) hands convolutions to YNNPACK by default (its
`xla_cpu_experimental_ynn_fusion_type` default is "individual_dot, reduce,
individual_convolution"). YNNPACK's convolution gradients are slow: on the
2-vCPU Xeon of benchmarks/RESULTS.md ("XLA:CPU convolutions") forward +
backward of ResNet-50's convolutions at batch 16 runs 1.3-6.4x faster
through XLA's own (Eigen) convolution.

`jit` therefore compiles with YNNPACK kept for dots and reductions but not
for convolutions. The option is per compilation, so it changes nothing else
in the process. It is a field of XLA's CPU debug options, which other
backends' compilers do not read (not measured here: no GPU).

JAX accepts compiler options on top-level compilations only: a function
compiled with `jit` cannot be called inside another `jax.jit` (JAX raises a
ValueError naming it). Functions that run inside one (the Hessian's
products inside the spectral algorithms) use plain `jax.jit` and get the
options of the top-level function that calls them.

A user who sets `xla_cpu_experimental_ynn_fusion_type` in `XLA_FLAGS` keeps
their own setting: `jit` then passes no option.

Synopsis:
  step = xla_options.jit(mapped_step, donate_argnums=0)
"""

import os
from typing import Any, Callable

import jax

YNN_FUSION_FLAG = "xla_cpu_experimental_ynn_fusion_type"
# XLA's default set without LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION.
YNN_FUSIONS_WITHOUT_CONVOLUTION = ("LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
                                   "LIBRARY_FUSION_TYPE_REDUCE")


def compiler_options() -> dict[str, str] | None:
  """The per-compilation XLA options `jit` uses, or None when the user's
  `XLA_FLAGS` already choose the YNNPACK fusions."""
  if YNN_FUSION_FLAG in os.environ.get("XLA_FLAGS", ""):
    return None
  return {YNN_FUSION_FLAG: YNN_FUSIONS_WITHOUT_CONVOLUTION}


def jit(fun: Callable[..., Any], **jit_kwargs: Any) -> Callable[..., Any]:
  """`jax.jit(fun, **jit_kwargs)` compiled with `compiler_options()`."""
  return jax.jit(fun, compiler_options=compiler_options(), **jit_kwargs)
