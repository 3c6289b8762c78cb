"""Hand-run benchmark of the GCP head forward + backward (not a test).

What is measured
  The GCP head z = triu_vec(isqrt(covariance(x), num_iters=5)) on NHWC
  features x of shape (B, 14, 14, 256) float32 (ReLU of standard normals, like
  the output of a post-ReLU reduction block), so C = 256 channels,
  M = 14 * 14 = 196 positions, N = 5 Newton-Schulz iterations. One timed call
  is forward + backward: z and the gradient w.r.t. x of <z, w> for a fixed
  random cotangent w of shape (B, C (C + 1) / 2), i.e. `jax.vjp` of the head
  applied to w. That is what a training step pays for the head.

  For each batch size B:
    * jax-autodiff: the library head (`gcp_jax.ops`), gradient by reverse-mode
      autodiff through its `lax.fori_loop`;
    * jax-custom_vjp: the same forward with `isqrt` replaced by a
      `jax.custom_vjp` that implements the hand-written backward of
      docs/method.md §3.2 (Newton-Schulz forward saving Y_k, Z_k,
      Python-unrolled; the trace-normalisation term vectorised over the
      batch);
    * jax-eig: `matrix_power_eig(p=0.5)` (eigh) instead of `isqrt`;
    * jax-isqrt-eigh: the library head with `method="eigh"`, the same
      function as jax-autodiff (the Newton-Schulz polynomial evaluated on the
      eigenvalues of the M x M Gram matrix, `ops.pooled_isqrt`), custom_jvp
      derivatives;
    * torch-reference: the reference algorithm as its users run it,
      `torch_reference.ops.fmpn_head` (`torch.autograd.Function`s: M x M
      centring matrix and `bmm`, hand-written Newton-Schulz backward with the
      Python loop over the batch for the trace term, triu by gather/scatter;
      eager, default MKL/OpenMP, `torch.set_num_threads(2)`);
    * matmul: a jitted batched `jnp.matmul` (B, 256, 256) x (B, 256, 256) at
      `Precision.HIGHEST`, timed in the same process, interleaved with the
      heads, as the attainable fp32 matmul throughput at this size.

  Before any timing, the script checks on the same inputs that the
  custom_vjp gradient w.r.t. x, the isqrt-eigh output and gradient, and the
  torch output and gradient w.r.t. x, match the library within `TOLERANCE`
  (relative Frobenius norm, float32).
  The hand-written backward is correct only on the symmetric part of
  dL/dSigma, which is all the covariance backward uses, hence the end-to-end
  comparison w.r.t. the features.

How it is timed
  JAX functions are `jax.jit(f).lower(...).compile()`d once and called with
  device arrays; each call is ended by `jax.block_until_ready` and timed with
  `time.perf_counter`. At each B, the matmul and the three JAX heads are timed
  interleaved: after two untimed warm-up calls of each, every one of
  `--repeats` rounds times 5 matmul calls (it is ~50x cheaper than the head)
  and one call of each head, so all see the same machine state. The machine
  may be shared: the run-queue delay of this process's threads during each
  timing loop is reported as "CPU wait" (it also counts waits among the
  process's own threads, so it is not 0 on an idle machine), and the 1-minute
  load average at start and end is printed.
  Reported: the median per call. Torch is timed afterwards the same way (its
  calls are synchronous), not interleaved, so that OpenMP spin-waiting cannot
  slow the JAX calls.

  OPENBLAS_NUM_THREADS is set to 1 unless already set: jax's CPU `eigh`
  calls LAPACK from scipy's bundled OpenBLAS, whose worker threads busy-wait
  after each call and take a core from the XLA calls that follow, slowing
  the heads timed after an eig call (measurements: benchmarks/RESULTS.md,
  "Where the time goes, and what would speed it up"). Torch uses MKL and is
  not affected.

  Peak memory is `memory_analysis()` of the compiled JAX
  function: argument + output + temp sizes. (Its `peak_memory_in_bytes` field
  is not used: on the CPU backend of jax 0.10.2 it leaves out the temp
  buffer; benchmarks/RESULTS.md, "Where the time goes, and what would speed
  it up".)

FLOP count (multiply-add = 2 FLOPs; per sample; C = 256, M = 196, N = 5)
  covariance forward   Xc^T Xc, (C x M)(M x C):               2 M C^2
  covariance backward  autodiff of the bilinear einsum: one
                       (M x C)(C x C) product per operand:     4 M C^2
  Newton-Schulz fwd    k = 1: 1 matmul, k = 2..N-1: 3 each, k = N: 2,
                       so 3 N - 3 = 12 matmuls of 2 C^3:      24 C^3
  Newton-Schulz bwd    autodiff, 2 matmuls per forward one:   48 C^3
  triu_vec             gather / scatter:                       0
  total                72 C^3 + 6 M C^2 = 1,285,029,888 FLOPs per sample
                       (94 % in Newton-Schulz), 41.12 GFLOP at B = 32.
  Element-wise work (mean subtraction, trace normalisation, 3I - ., scalings)
  is O(M C + C^2) per sample, < 0.1 %, and ignored. The count equals the dot
  FLOPs of the library's compiled HLO: 21 dot ops, of which the forward and
  backward loop bodies (3 and 6 dots) run N - 2 = 3 times, so 39 dots.
  The hand-written backward (docs/method.md §3.2) needs more: 6 matmuls for the
  last step, 10 per generic step (P and Q are recomputed), 2 for the first, i.e.
  38 instead of 24 (50 C x C products in all instead of 36); the torch reference
  does those 50 plus 4 C M^2 for the M x M centring matrix.
  GFLOP/s is reported for the library head only, from the count above; the
  other implementations are compared by time. For scale, the isqrt-eigh
  head does one M x M eigh and, per sample, 5 products of M x M x C (Gram
  matrix, V^T X, and three in the backward) and 2 of M x C x C (output and
  its backward): 10 M^2 C + 4 M C^2 = 149.7 MFLOP, 8.6 times fewer than 72 C^3
  + 6 M C^2.

Usage (from the repo root)
  python benchmarks/gcp_head_bench.py [--batch-sizes 8,32,128] [--repeats K]
      [--skip-torch] [--markdown]
  Tables go to stdout (aligned text, or markdown with --markdown); progress
  goes to stderr.
"""

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence

# On a GPU JAX would reserve 75 % of its memory; torch runs in this process.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
# Before numpy / scipy / jax load OpenBLAS (see "How it is timed").
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from benchmarks.bench_output import (  # noqa: E402
    interleaved_median_ms, log, median_ms, table)
import gcp_jax.ops as ops  # noqa: E402

try:
  import torch
  from torch_reference import ops as torch_ops
except ImportError:
  torch = None

CHANNELS = 256
HEIGHT = WIDTH = 14
POSITIONS = HEIGHT * WIDTH
NUM_ITERS = 5
TRIU_DIM = CHANNELS * (CHANNELS + 1) // 2
TOLERANCE = 1e-4
TORCH_THREADS = 2
MATMUL_REPEAT_FACTOR = 5
PIECES_BATCH = 32
HIGHEST = lax.Precision.HIGHEST


def head_flops(batch: int) -> int:
  """FLOPs of one head forward + backward (derivation in the docstring)."""
  matmul = 2 * CHANNELS ** 3
  ns_matmuls = 3 * (3 * NUM_ITERS - 3)  # forward + 2 x backward
  cov = 6 * POSITIONS * CHANNELS ** 2  # forward 2 M C^2, backward 4 M C^2
  return batch * (ns_matmuls * matmul + cov)


# ----------------------------------------------------------------- JAX side


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.matmul(a, b, precision=HIGHEST)


def _ns_forward(cov: jax.Array, num_iters: int) -> tuple[jax.Array, tuple]:
  """docs/method.md §3.1 for num_iters >= 2, keeping what the §3.2 backward
  needs."""
  i3 = 3.0 * jnp.eye(cov.shape[-1], dtype=cov.dtype)
  t = jnp.trace(cov, axis1=-2, axis2=-1)[:, None, None]
  a = cov / t
  tk = 0.5 * (i3 - a)
  ys, zs = [_mm(a, tk)], [tk]
  for _ in range(num_iters - 2):
    tk = 0.5 * (i3 - _mm(zs[-1], ys[-1]))
    ys.append(_mm(ys[-1], tk))
    zs.append(_mm(tk, zs[-1]))
  y_n = 0.5 * _mm(ys[-1], i3 - _mm(zs[-1], ys[-1]))
  sqrt_t = jnp.sqrt(t)
  return y_n * sqrt_t, (cov, a, t, sqrt_t, y_n, tuple(ys), tuple(zs))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def isqrt_handwritten(cov: jax.Array, num_iters: int) -> jax.Array:
  """iSQRT-COV of (B, C, C) `cov` with the hand-written backward
  (docs/method.md §3.2).

  Same forward as `gcp_jax.ops.isqrt` (no trace clamp); num_iters >= 2.
  The returned cotangent is exact on its symmetric part only.
  """
  return _ns_forward(cov, num_iters)[0]


def _isqrt_handwritten_fwd(cov: jax.Array,
                           num_iters: int) -> tuple[jax.Array, tuple]:
  return _ns_forward(cov, num_iters)


def _isqrt_handwritten_bwd(num_iters: int, res: tuple,
                           g: jax.Array) -> tuple[jax.Array]:
  del num_iters  # implied by the saved Y_k, Z_k
  cov, a, t, sqrt_t, y_n, ys, zs = res
  eye = jnp.eye(cov.shape[-1], dtype=cov.dtype)
  i3 = 3.0 * eye
  g_bar = g * sqrt_t
  g_t_post = jnp.sum(g * y_n, axis=(-2, -1)) / (2.0 * sqrt_t[:, 0, 0])
  y, z = ys[-1], zs[-1]
  dy = 0.5 * (_mm(g_bar, i3 - _mm(y, z)) - _mm(_mm(z, y), g_bar))
  dz = -0.5 * _mm(_mm(y, g_bar), y)
  for y, z in zip(ys[-2::-1], zs[-2::-1]):
    p, q = i3 - _mm(y, z), _mm(z, y)
    dy, dz = (0.5 * (_mm(dy, p) - _mm(_mm(z, dz), z) - _mm(q, dy)),
              0.5 * (_mm(p, dz) - _mm(_mm(y, dy), y) - _mm(dz, q)))
  da = jnp.swapaxes(0.5 * (_mm(dy, i3 - a) - dz - _mm(a, dy)), -1, -2)
  diag = g_t_post - jnp.sum(da * cov, axis=(-2, -1)) / t[:, 0, 0] ** 2
  return (da / t + diag[:, None, None] * eye,)


isqrt_handwritten.defvjp(_isqrt_handwritten_fwd, _isqrt_handwritten_bwd)

HEADS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "autodiff": lambda x: ops.triu_vec(ops.isqrt(ops.covariance(x),
                                                 NUM_ITERS)),
    "custom_vjp": lambda x: ops.triu_vec(isqrt_handwritten(
        ops.covariance(x), NUM_ITERS)),
    "eig": lambda x: ops.triu_vec(ops.matrix_power_eig(ops.covariance(x),
                                                       p=0.5)),
    "isqrt_eigh": lambda x: ops.get_representation("isqrt")(
        x, num_iters=NUM_ITERS, method="eigh"),
}


def fwd_bwd(fn: Callable[[jax.Array], jax.Array]) -> Callable:
  """(x, w) -> (fn(x), d<fn(x), w>/dx)."""
  def run(x: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    out, vjp = jax.vjp(fn, x)
    return out, vjp(w)[0]
  return run


def compile_jax(fn: Callable, *args: jax.Array) -> jax.stages.Compiled:
  return jax.jit(fn).lower(*args).compile()


def memory_mib(compiled: jax.stages.Compiled) -> float:
  """Argument + output + temp sizes of a compiled function, in MiB."""
  stats = compiled.memory_analysis()
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes
          + stats.temp_size_in_bytes) / 2 ** 20


def jax_call(compiled: jax.stages.Compiled,
             args: Sequence[jax.Array]) -> Callable[[], object]:
  return lambda: jax.block_until_ready(compiled(*args))


def cpu_wait_s() -> float:
  """Total time the threads of this process waited for a CPU, in seconds.

  Sum of the run-queue delays in /proc/self/task/*/schedstat (Linux); NaN
  elsewhere. It grows when other processes, or more of this process's own
  threads than there are cores, compete for the cores.
  """
  try:
    tasks = os.listdir("/proc/self/task")
  except OSError:
    return float("nan")
  total = 0
  for task in tasks:
    try:
      with open(f"/proc/self/task/{task}/schedstat") as f:
        total += int(f.read().split()[1])
    except OSError:  # the thread has exited
      continue
  return total / 1e9


def waited(call: Callable[[], object]) -> tuple[object, float]:
  """Runs `call`, returns (its result, CPU wait in % of the wall time)."""
  wait, start = cpu_wait_s(), time.perf_counter()
  out = call()
  wall = time.perf_counter() - start
  return out, 100 * (cpu_wait_s() - wait) / wall


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def check(name: str, err: float) -> None:
  log(f"  check {name}: relative error {err:.2e}")
  if not err <= TOLERANCE:
    raise SystemExit(f"{name}: relative error {err:.2e} > {TOLERANCE:.0e}; "
                     "timings would not compare the same function.")


# --------------------------------------------------------------- torch side


def torch_fwd_bwd(head: Callable, x: "torch.Tensor",
                  w: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
  x = x.detach().requires_grad_(True)
  z = head(x)
  (gx,) = torch.autograd.grad(z, x, w)
  return z.detach(), gx


# ----------------------------------------------------------------- driver


def make_inputs(batch: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(batch)
  x = np.maximum(rng.standard_normal(
      (batch, HEIGHT, WIDTH, CHANNELS), dtype=np.float32), 0.0)
  w = rng.standard_normal((batch, TRIU_DIM), dtype=np.float32)
  return x, w


def bench_batch(batch: int, repeats: int, use_torch: bool) -> dict:
  """All measurements at one batch size."""
  log(f"B={batch}")
  x_np, w_np = make_inputs(batch)
  x, w = jnp.asarray(x_np), jnp.asarray(w_np)
  flops = head_flops(batch)
  res = {"B": batch, "gflop": flops / 1e9}

  compiled = {name: compile_jax(fwd_bwd(fn), x, w)
              for name, fn in HEADS.items()}
  z_ref, gx_ref = (np.asarray(a) for a in compiled["autodiff"](x, w))
  _, gx_custom = compiled["custom_vjp"](x, w)
  check("custom_vjp grad x vs autodiff", rel_err(gx_custom, gx_ref))
  z_eigh, gx_eigh = compiled["isqrt_eigh"](x, w)
  check("isqrt-eigh z vs autodiff", rel_err(z_eigh, z_ref))
  check("isqrt-eigh grad x vs autodiff", rel_err(gx_eigh, gx_ref))

  if use_torch:
    head = functools.partial(torch_ops.fmpn_head, n=NUM_ITERS)
    x_t = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy())
    w_t = torch.from_numpy(w_np)
    z_t, gx_t = torch_fwd_bwd(head, x_t, w_t)
    check("torch z vs jax", rel_err(z_t.numpy(), z_ref))
    check("torch grad x vs jax",
          rel_err(gx_t.numpy().transpose(0, 2, 3, 1), gx_ref))

  mats = jnp.asarray(np.random.default_rng(0).standard_normal(
      (batch, CHANNELS, CHANNELS), dtype=np.float32))
  matmul = compile_jax(lambda a, b: jnp.matmul(a, b, precision=HIGHEST),
                       mats, mats)
  calls = [(jax_call(matmul, (mats, mats)), MATMUL_REPEAT_FACTOR)]
  calls += [(jax_call(comp, (x, w)), 1) for comp in compiled.values()]
  times, res["jax_wait"] = waited(
      lambda: interleaved_median_ms(calls, repeats))
  res["matmul_ms"] = times[0]
  res["matmul_gflops"] = 2 * batch * CHANNELS ** 3 / res["matmul_ms"] / 1e6
  log(f"  matmul {res['matmul_ms']:.2f} ms")
  for (name, comp), ms in zip(compiled.items(), times[1:]):
    res[f"{name}_ms"] = ms
    res[f"{name}_mib"] = memory_mib(comp)
    log(f"  {name} {ms:.1f} ms")
  res["head_gflops"] = flops / res["autodiff_ms"] / 1e6
  if use_torch:
    res["torch_ms"], res["torch_wait"] = waited(lambda: median_ms(
        lambda: torch_fwd_bwd(head, x_t, w_t), repeats))
    log(f"  torch {res['torch_ms']:.1f} ms")
  return res


def bench_pieces(repeats: int) -> tuple[list[tuple[str, float]], float]:
  """JAX fwd + bwd of each stage of the head at B = PIECES_BATCH.

  Returns ([(stage, ms)], CPU wait in % of the timing loop).
  """
  log(f"pieces at B={PIECES_BATCH}")
  x_np, w_np = make_inputs(PIECES_BATCH)
  x, w = jnp.asarray(x_np), jnp.asarray(w_np)
  cov = ops.covariance(x)
  g_cov = jnp.asarray(np.random.default_rng(1).standard_normal(
      cov.shape, dtype=np.float32))
  pieces = [
      ("covariance", ops.covariance, x, g_cov),
      (f"isqrt(N={NUM_ITERS})", lambda s: ops.isqrt(s, NUM_ITERS), cov,
       g_cov),
      ("triu_vec", ops.triu_vec, cov, w),
      ("whole head", HEADS["autodiff"], x, w),
  ]
  calls = [(jax_call(compile_jax(fwd_bwd(fn), arg, cot), (arg, cot)), 1)
           for _, fn, arg, cot in pieces]
  times, wait = waited(lambda: interleaved_median_ms(calls, repeats))
  return [(piece[0], ms) for piece, ms in zip(pieces, times)], wait


def report(results: list[dict],
           pieces: tuple[list[tuple[str, float]], float],
           use_torch: bool, markdown: bool) -> str:
  head_rows = [[str(r["B"]), f"{r['autodiff_ms']:.1f}", f"{r['gflop']:.2f}",
                f"{r['head_gflops']:.1f}", f"{r['matmul_gflops']:.1f}",
                f"{100 * r['head_gflops'] / r['matmul_gflops']:.1f} %",
                f"{r['autodiff_mib']:.1f}",
                f"{r['jax_wait']:.1f} %"]
               for r in results]
  out = ["Library head (covariance -> isqrt(N=5) -> triu_vec, autodiff), "
         "forward + backward:", "",
         table(["B", "ms", "GFLOP", "GFLOP/s", "matmul GFLOP/s",
                "of matmul", "MiB arg+out+temp", "CPU wait"],
               head_rows, markdown),
         ""]
  cmp_headers = ["B", "autodiff ms", "custom_vjp ms", "custom_vjp/autodiff",
                 "eig ms", "eig/autodiff", "custom_vjp MiB", "eig MiB"]
  if use_torch:
    cmp_headers += ["torch ms", "torch/autodiff", "torch CPU wait"]
  cmp_rows = []
  for r in results:
    row = [str(r["B"]), f"{r['autodiff_ms']:.1f}", f"{r['custom_vjp_ms']:.1f}",
           f"{r['custom_vjp_ms'] / r['autodiff_ms']:.2f}x",
           f"{r['eig_ms']:.1f}", f"{r['eig_ms'] / r['autodiff_ms']:.2f}x",
           f"{r['custom_vjp_mib']:.1f}", f"{r['eig_mib']:.1f}"]
    if use_torch:
      row += [f"{r['torch_ms']:.1f}",
              f"{r['torch_ms'] / r['autodiff_ms']:.2f}x",
              f"{r['torch_wait']:.1f} %"]
    cmp_rows.append(row)
  out += ["Forward + backward, other implementations (ratios > 1: the "
          "library head is faster):", "",
          table(cmp_headers, cmp_rows, markdown), ""]
  eigh_headers = ["B", "isqrt-eigh ms", "autodiff/isqrt-eigh",
                  "isqrt-eigh MiB"]
  if use_torch:
    eigh_headers += ["torch/isqrt-eigh"]
  eigh_rows = []
  for r in results:
    row = [str(r["B"]), f"{r['isqrt_eigh_ms']:.1f}",
           f"{r['autodiff_ms'] / r['isqrt_eigh_ms']:.2f}x",
           f"{r['isqrt_eigh_mib']:.1f}"]
    if use_torch:
      row += [f"{r['torch_ms'] / r['isqrt_eigh_ms']:.2f}x"]
    eigh_rows.append(row)
  out += ["The same head with method=\"eigh\" (same function; ratios > 1: "
          "isqrt-eigh is faster):", "",
          table(eigh_headers, eigh_rows, markdown), ""]
  pieces, pieces_wait = pieces
  total = pieces[-1][1]
  piece_rows = [[name, f"{ms:.1f}", f"{100 * ms / total:.1f} %"]
                for name, ms in pieces]
  out += [f"JAX pieces, forward + backward, B={PIECES_BATCH} (CPU wait "
          f"{pieces_wait:.1f} %):", "",
          table(["piece", "ms", "of whole head"], piece_rows, markdown), "",
          "CPU wait: time this process's threads spent runnable but waiting "
          "for a core (run-queue delay, summed over threads) in % of the "
          "wall time of the timing loop. It includes waits among the "
          "process's own threads; tens of % mean other processes shared the "
          "cores and the times are inflated."]
  return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch-sizes", default="8,32,128",
                      help="comma-separated batch sizes (default 8,32,128)")
  parser.add_argument("--repeats", type=int, default=10,
                      help="timed calls per measurement; the median is "
                      "reported (default 10)")
  parser.add_argument("--skip-torch", action="store_true",
                      help="leave out the PyTorch reference column")
  parser.add_argument("--markdown", action="store_true",
                      help="print markdown tables instead of aligned text")
  args = parser.parse_args(argv)
  batches = [int(b) for b in args.batch_sizes.split(",")]

  use_torch = not args.skip_torch and torch is not None
  if not args.skip_torch and torch is None:
    print("note: torch is not installed; the torch reference column is "
          "skipped.")
  versions = f"jax {jax.__version__}, backend {jax.default_backend()}"
  if use_torch:
    torch.set_num_threads(TORCH_THREADS)
    versions += (f", torch {torch.__version__} "
                 f"({torch.get_num_threads()} threads)")
  print(f"{versions}; {os.cpu_count()} CPUs; OPENBLAS_NUM_THREADS="
        f"{os.environ['OPENBLAS_NUM_THREADS']}; C={CHANNELS}, "
        f"{HEIGHT}x{WIDTH}, N={NUM_ITERS}; median of {args.repeats} timed "
        f"calls (matmul: {MATMUL_REPEAT_FACTOR * args.repeats}) after 2 "
        f"warm-up calls; load average at start {os.getloadavg()[0]:.2f}.\n")

  results = [bench_batch(b, args.repeats, use_torch) for b in batches]
  pieces = bench_pieces(args.repeats)
  print(report(results, pieces, use_torch, args.markdown))
  print(f"\nLoad average at end {os.getloadavg()[0]:.2f}.")


if __name__ == "__main__":
  main()
