"""Hand-run benchmark: ResNet-50 convolutions on XLA:CPU, per backend.

Not a test. For the convolution shapes of the fast-MPN-COV ResNet-50 at
224 px and batch 16 (layer4 at stride 1), times forward + backward (the
gradients of <conv(x, W), G> with respect to x and W, one compiled function)
of:

  1 x 1 convolutions
    * `nn.Conv`, compiled with `jax.jit` (XLA's default: YNNPACK convolution)
    * `nn.Conv`, compiled with `gcp_jax.backend.jit` (XLA's own
      convolution)
    * `layers.PointwiseConv` (a dot; what the library uses), compiled with
      `gcp_jax.backend.jit`
  3 x 3 convolutions (`nn.Conv`, what the library uses)
    * compiled with `jax.jit` and with `gcp_jax.backend.jit`.

Each number is the median of `--repeats` calls after two warm-up calls,
float32, on whatever CPU it runs on; GFLOP/s counts 3 x the forward's
2 * B * H_out * W_out * k^2 * C_in * C_out. Before timing, every variant's
output and gradients are checked against the first variant of its kernel
size (relative max error <= 1e-4).

  python benchmarks/conv_backends.py [--markdown] [--repeats 5]
"""

import argparse
import os
import sys
from collections.abc import Callable, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import jax  # noqa: E402
from flax import linen as nn  # noqa: E402

from benchmarks.bench_output import (jax_run_header, log,  # noqa: E402
                                     max_rel_diff, median_ms, table)
from gcp_jax import backend  # noqa: E402
from gcp_jax.models import layers  # noqa: E402

BATCH = 16
# (kernel, input size, C_in, C_out, stride): the distinct shapes of the
# Bottleneck convolutions and downsample shortcuts of the benchmark model.
SHAPES = (
    (1, 56, 64, 256, 1), (1, 56, 256, 64, 1), (1, 56, 256, 128, 1),
    (1, 28, 128, 512, 1), (1, 56, 256, 512, 2), (1, 14, 256, 1024, 1),
    (1, 14, 1024, 2048, 1), (1, 14, 2048, 512, 1),
    (3, 56, 64, 64, 1), (3, 56, 128, 128, 2), (3, 28, 128, 128, 1),
    (3, 14, 256, 256, 1), (3, 14, 512, 512, 1),
)


def _flax_conv(kernel: int, features: int, stride: int) -> nn.Module:
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 kernel_init=layers.conv_kernel_init)


def _variants(kernel: int, features: int, stride: int
              ) -> list[tuple[str, nn.Module, Callable]]:
  flax_conv = _flax_conv(kernel, features, stride)
  out = [("nn.Conv, jax.jit", flax_conv, jax.jit),
         ("nn.Conv, backend.jit", flax_conv, backend.jit)]
  if kernel == 1:
    out.append(("PointwiseConv, backend.jit",
                layers.PointwiseConv(features, stride), backend.jit))
  return out


def bench_shape(kernel: int, size: int, c_in: int, c_out: int, stride: int,
                repeats: int) -> list[list[str]]:
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (BATCH, size, size, c_in))
  out_size = (size - 1) // stride + 1
  cot = jax.random.normal(keys[1], (BATCH, out_size, out_size, c_out))
  flops = 3 * 2 * BATCH * out_size ** 2 * kernel ** 2 * c_in * c_out
  rows, reference = [], None
  for name, module, jit in _variants(kernel, c_out, stride):
    params = module.init(keys[2], x)

    def fwd_bwd(params, x, module=module):
      y, vjp = jax.vjp(module.apply, params, x)
      return (y, *vjp(cot))

    fn = jit(fwd_bwd)
    result = fn(params, x)
    if reference is None:
      reference = result
    err = max(max_rel_diff(a, b) for a, b in zip(
        jax.tree.leaves(result), jax.tree.leaves(reference)))
    if err > 1e-4:
      raise SystemExit(f"{name} disagrees with {rows[0][1]} on "
                       f"{kernel}x{kernel} {size}px {c_in}->{c_out}: {err}")
    seconds = median_ms(
        lambda: jax.block_until_ready(fn(params, x)), repeats) / 1e3
    rows.append([f"{kernel}x{kernel} {size}px {c_in}->{c_out} s{stride}",
                 name, f"{seconds * 1e3:.1f}", f"{flops / seconds / 1e9:.0f}",
                 f"{err:.0e}"])
    log("  " + " | ".join(rows[-1]))
  return rows


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--markdown", action="store_true")
  args = parser.parse_args(argv)
  print(jax_run_header() + "\n")
  rows = []
  for shape in SHAPES:
    rows += bench_shape(*shape, args.repeats)
  print(f"Forward + backward, batch {BATCH}, float32, median of "
        f"{args.repeats}:\n")
  print(table(["conv", "variant", "ms", "GFLOP/s", "max rel. diff"], rows,
              args.markdown))
  print(f"\nLoad average at end {os.getloadavg()[0]:.2f}.")


if __name__ == "__main__":
  main()
