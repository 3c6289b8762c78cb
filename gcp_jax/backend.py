"""Every backend-specific choice of the library, in one place.

The models, steps and analyses are written once for all backends. These are
the exceptions; each applies only on its own backend:

  choice                          cpu                       gpu          tpu
  1 x 1 convolution (models)      `layers.PointwiseConv`    `nn.Conv`    `nn.Conv`
  XLA options of each compile     YNNPACK kept off convs    Triton GEMM  none
                                                            fusion off
  glibc allocator (main.py)       keep freed memory         untouched    untouched

Why each one:

* CPU, 1 x 1 convolution as a dot on the `(B * H * W, C)` matrix: its
  gradients are dots, which XLA:CPU runs much faster than its convolution
  backward (`models/layers.PointwiseConv`; benchmarks/RESULTS.md, "XLA:CPU
  convolutions"). On GPUs cuDNN runs the convolution itself and the
  standard `nn.Conv` is used: `PointwiseConv` measured about as fast there
  but is the layer with which Triton GEMM fusion aborted XLA (below), so
  `nn.Conv` keeps a user's `--xla_gpu_enable_triton_gemm=true` safe
  (benchmarks/RESULTS.md, "GPU seam choices"). Both have the same variable (`kernel`,
  `(1, 1, C_in, C_out)`, same initialiser and RNG path), so checkpoints and
  weight import do not depend on the backend.
* CPU, `xla_cpu_experimental_ynn_fusion_type` without convolutions: XLA:CPU
  hands convolutions to YNNPACK by default, whose convolution gradients are
  slow (benchmarks/RESULTS.md, "XLA:CPU convolutions"); dots and reductions
  keep YNNPACK.
* GPU, `xla_gpu_enable_triton_gemm=false`: with Triton GEMM fusion on, XLA
  (jax 0.11.2, CUDA 13) aborted the process while compiling the ResNet-50
  training step: "triton_tiling_propagation.cc:703 Check failed:
  subdim_size_accumulator == dim_size (784 vs. 56)" in GemmFusion. With
  `nn.Conv` 1 x 1 convolutions it compiles, but the step is no faster and
  compiles several times slower (benchmarks/RESULTS.md, "GPU seam
  choices"). Dots then run on cuBLAS, convolutions on cuDNN.
* CPU, glibc keeps freed memory: XLA:CPU allocates and frees a step's
  temporaries on every call (`gcp_jax.allocator`). This one is decided
  before JAX is imported, from the installed plugins and `JAX_PLATFORMS`
  (`keep_freed_memory_wanted`).

A user's own `XLA_FLAGS` win: an option named there is not passed again.
The backend is `jax.default_backend()` unless a test or benchmark chooses
another one's variants with `assume(...)` (e.g. the GPU layers on a CPU).

JAX accepts compiler options on top-level compilations only: a function
compiled with `jit` cannot be called inside another `jax.jit` (JAX raises a
ValueError naming it). Functions that run inside one (the Hessian's
products inside the spectral algorithms) use plain `jax.jit` and get the
options of the top-level function that calls them.

This module imports JAX only inside its functions, so `main.py` can ask
`keep_freed_memory_wanted()` before anything starts a thread.

Synopsis:
  step = backend.jit(mapped_step, donate_argnums=0)
  if backend.pointwise_conv_as_dot(): ...     # inside a model's layers
  with backend.assume("gpu"): variables = model.init(key, x, False)
"""

import contextlib
import os
from collections.abc import Iterator
from typing import Any, Callable

CPU, GPU, TPU = "cpu", "gpu", "tpu"

YNN_FUSION_FLAG = "xla_cpu_experimental_ynn_fusion_type"
# XLA's default set without LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION.
YNN_FUSIONS_WITHOUT_CONVOLUTION = ("LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
                                   "LIBRARY_FUSION_TYPE_REDUCE")
TRITON_GEMM_FLAG = "xla_gpu_enable_triton_gemm"

# Per backend: XLA debug option -> value, for every compiled step.
_COMPILER_OPTIONS: dict[str, dict[str, Any]] = {
    CPU: {YNN_FUSION_FLAG: YNN_FUSIONS_WITHOUT_CONVOLUTION},
    GPU: {TRITON_GEMM_FLAG: False},
    TPU: {},
}

_assumed: list[str] = []


def platform() -> str:
  """The backend whose choices apply: the innermost `assume(...)`, else
  `jax.default_backend()` ('cpu', 'gpu' or 'tpu')."""
  if _assumed:
    return _assumed[-1]
  import jax
  return jax.default_backend()


@contextlib.contextmanager
def assume(name: str) -> Iterator[None]:
  """Within the block, the library makes `name`'s choices whatever device
  it runs on (tests compare the CPU and GPU variants on one machine).
  Functions traced inside the block keep the choices they were traced
  with: build and call jitted functions inside it."""
  if name not in _COMPILER_OPTIONS:
    raise ValueError(f"Unknown backend {name!r}; use one of "
                     f"{sorted(_COMPILER_OPTIONS)}.")
  _assumed.append(name)
  try:
    yield
  finally:
    _assumed.pop()


def pointwise_conv_as_dot() -> bool:
  """True where 1 x 1 convolutions run as reshaped dots (CPU only)."""
  return platform() == CPU


def compiler_options(name: str | None = None) -> dict[str, Any] | None:
  """The per-compilation XLA options for backend `name` (default
  `platform()`), without those the user's `XLA_FLAGS` already set; None if
  nothing is left."""
  user_flags = os.environ.get("XLA_FLAGS", "")
  options = {flag: value for flag, value in
             _COMPILER_OPTIONS[name or platform()].items()
             if flag not in user_flags}
  return options or None


def jit(fun: Callable[..., Any], **jit_kwargs: Any) -> Callable[..., Any]:
  """`jax.jit(fun, **jit_kwargs)` compiled with this backend's
  `compiler_options()`."""
  import jax
  return jax.jit(fun, compiler_options=compiler_options(), **jit_kwargs)


def keep_freed_memory_wanted() -> bool:
  """True if `main.py` should apply `gcp_jax.allocator.keep_freed_memory`:
  JAX can only use the CPU and `GLIBC_TUNABLES` sets no malloc tunable (the
  user's choice wins). Imports no JAX."""
  from gcp_jax import allocator
  return allocator.cpu_only_jax() and not allocator.user_malloc_tunables()
