"""Hand-run benchmark: ResNet-50's BatchNorm layers, forward + backward.

Not a test. For every BatchNorm of the benchmark model of
`train_throughput.py` (fast-MPN-COV ResNet-50 at 224 px, batch 16, layer4 at
stride 1, plus the head's reduction BN: 54 layers in 11 distinct shapes),
times forward + backward in training mode of

  * `flax.linen.BatchNorm(momentum=0.9, epsilon=1e-5)`, which normalises as
    (x - mean) * scale / sqrt(var + eps) + bias;
  * `gcp_jax.models.layers.BatchNorm`, the library's, which normalises as
    x * a + b (`gcp_jax.ops.batch_norm`),

each followed by a ReLU where the model has one (after bn1, bn2, the stem's
and the head's BN; not after bn3 and the shortcut BN, which feed the
residual sum). One compiled function per variant and shape, as the training
step runs it: `shard_map` over a 1-device mesh with the statistics
`pmean`ed over its axis (synchronised BN), compiled with
`gcp_jax.backend.jit`; it returns the output, the new running statistics
and the gradients of <output, G> with respect to x, scale and bias.

Each time is the median of `--repeats` interleaved rounds after two warm-up
calls, float32. "total" weights each shape by its number of layers. Before
timing, the library's output and scale / bias gradients are checked against
Flax's (max relative difference <= 1e-3; the input gradients are not
compared element-wise, because the ReLU's mask flips for pre-activations
that round to the other side of 0).

  python benchmarks/batch_norm_bench.py [--markdown] [--repeats 7]
"""

import argparse
import os
import sys
from collections.abc import Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import jax  # noqa: E402
from flax import linen as nn  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from benchmarks.bench_output import (interleaved_median_ms,  # noqa: E402
                                     jax_run_header, log, max_rel_diff,
                                     table)
from gcp_jax import backend  # noqa: E402
from gcp_jax.models import layers  # noqa: E402

BATCH = 16
AXIS = "data"
# (spatial size, channels, ReLU after it, number of layers) of the model's
# BatchNorms at 224 px.
SHAPES = (
    (112, 64, True, 1),                                   # stem
    (56, 64, True, 6), (56, 256, False, 4),               # layer1
    (56, 128, True, 1), (28, 128, True, 7), (28, 512, False, 5),  # layer2
    (28, 256, True, 1), (14, 256, True, 12), (14, 1024, False, 7),  # layer3
    (14, 512, True, 6), (14, 2048, False, 4),             # layer4 (+ head)
)
VARIANTS = (
    ("flax.linen.BatchNorm",
     lambda: nn.BatchNorm(use_running_average=False, momentum=0.9,
                          epsilon=1e-5, axis_name=AXIS)),
    ("layers.BatchNorm",
     lambda: layers.BatchNorm(use_running_average=False, axis_name=AXIS)),
)


def _compiled(module: nn.Module, relu: bool, mesh: jax.sharding.Mesh):
  def fwd_bwd(variables, x, cot):
    def apply(params, xx):
      y, updates = module.apply({**variables, "params": params}, xx,
                                mutable=["batch_stats"])
      return (nn.relu(y) if relu else y), updates

    y, vjp, updates = jax.vjp(apply, variables["params"], x, has_aux=True)
    grad_params, grad_x = vjp(cot)
    return y, updates, grad_params, grad_x

  return backend.jit(jax.shard_map(
      fwd_bwd, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS)),
      out_specs=(P(AXIS), P(), P(), P(AXIS))))



def bench_shape(size: int, channels: int, relu: bool, mesh, repeats: int
                ) -> list[float]:
  keys = jax.random.split(jax.random.key(0), 4)
  sharded = NamedSharding(mesh, P(AXIS))
  shape = (BATCH, size, size, channels)
  # Conv outputs are not centred: a per-channel offset and spread.
  x = jax.device_put(
      jax.random.normal(keys[0], shape) * jax.random.uniform(
          keys[1], (channels,), minval=0.5, maxval=2.0)
      + jax.random.normal(keys[2], (channels,)), sharded)
  cot = jax.device_put(jax.random.normal(keys[3], shape), sharded)
  variables = VARIANTS[0][1]().init(jax.random.key(1), x[:1])
  fns = [_compiled(make(), relu, mesh) for _, make in VARIANTS]
  flax_out, ours_out = (fn(variables, x, cot) for fn in fns)
  err = max(max_rel_diff(ours_out[0], flax_out[0]),
            *(max_rel_diff(a, b) for a, b in zip(
                jax.tree.leaves(ours_out[1:3]),
                jax.tree.leaves(flax_out[1:3]))))
  if err > 1e-3:
    raise SystemExit(f"layers.BatchNorm disagrees with Flax on {shape}: "
                     f"{err}")
  times = interleaved_median_ms(
      [(lambda fn=fn: jax.block_until_ready(fn(variables, x, cot)), 1)
       for fn in fns], repeats)
  log(f"  {shape} relu={relu}: " + ", ".join(f"{t:.1f}" for t in times)
      + f" ms, max rel. diff {err:.0e}")
  return [*times, err]


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--markdown", action="store_true")
  args = parser.parse_args(argv)
  print(jax_run_header() + "\n")
  mesh = jax.make_mesh((1,), (AXIS,), devices=jax.devices()[:1])
  rows, totals = [], [0.0, 0.0]
  for size, channels, relu, count in SHAPES:
    flax_ms, ours_ms, err = bench_shape(size, channels, relu, mesh,
                                        args.repeats)
    totals[0] += count * flax_ms
    totals[1] += count * ours_ms
    rows.append([f"{BATCH}x{size}x{size}x{channels}", "yes" if relu else "no",
                 str(count), f"{flax_ms:.1f}", f"{ours_ms:.1f}",
                 f"{flax_ms / ours_ms:.2f}x", f"{err:.0e}"])
  rows.append(["total (x layers)", "", str(sum(s[3] for s in SHAPES)),
               f"{totals[0]:.0f}", f"{totals[1]:.0f}",
               f"{totals[0] / totals[1]:.2f}x", ""])
  print(f"BatchNorm forward + backward (training mode), float32, median of "
        f"{args.repeats} interleaved rounds, ms:\n")
  print(table(["input", "ReLU", "layers", "flax.linen", "layers.BatchNorm",
               "flax / ours", "max rel. diff"], rows, args.markdown))
  print(f"\nLoad average at end {os.getloadavg()[0]:.2f}.")


if __name__ == "__main__":
  main()
