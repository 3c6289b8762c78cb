"""One-GPU check of gcp-jax against PyTorch: compile, run, time (not a test).

Run on a machine with one NVIDIA GPU, from the repo root:

  python benchmarks/gpu_check.py [--json gpu_check.json] [--steps 20]

It needs jax, flax, optax, ml_collections, numpy, torch and (for the GAP
anchor) torchvision; it imports no TensorFlow. It prints one markdown table
to stdout (progress to stderr) and writes the same rows, the targets and
the run's versions to the JSON file. `--tiny` runs every row on small
models and batches, so the script itself can be checked on a CPU.

Rows (batch 128, 224 px, d = 256, N = 5 Newton-Schulz steps; the median of
`--steps` calls after warm-up; "x" is the anchor's time over the row's):

  head      the GCP head's forward + backward on (B, 14, 14, 256) features
            (ReLU of normals) with a fixed random cotangent:
            anchor: the reference's hand-differentiated autograd Functions
            in torch, fp32 (`torch_reference.ops.fmpn_head`);
            gcp-jax `triu_vec(pooled_isqrt(x))`, method newton_schulz and
            eigh. Both are checked against the anchor (output and gradient)
            before timing.
  step fp32 one SGD training step (momentum 0.9, weight decay 1e-4) of
            ResNet-50 + iSQRT-COV, everything float32:
            anchor: the torch reference model (`torch_reference.resnet`,
            fast-MPN-COV's topology and Functions head), eager;
            gcp-jax `resnet50_isqrt`, the step `main.py` runs.
  step bf16 anchor: the same torch model under autocast bfloat16 with
            channels_last, the GCP head in float32 with autocast off;
            gcp-jax `resnet50_isqrt` with a bfloat16 backbone (its head is
            float32 by construction).
  GAP bf16  anchor: torchvision `resnet50`, autocast bfloat16, channels_last
            (what PyTorch users run; the torch reference GAP ResNet when
            torchvision is missing); gcp-jax `resnet50_gap`, bfloat16.
  eval      `make_eval_step` of `resnet50_isqrt` (fp32 and bf16), images/s.

For every gcp-jax row the compile time (lower + compile) is reported, and
for the training steps the achieved TFLOP/s, counting 3x the forward
multiply-adds of `models.summary` (2 FLOPs each) per image, as a fraction
of the bfloat16 matmul rate measured in the same run (an 8192^3 product).

The torch rows run with torch's defaults (cuDNN may use TF32 for fp32
convolutions, as XLA does by default; both heads force full fp32). JAX
takes at most `XLA_PYTHON_CLIENT_MEM_FRACTION` (set to 0.5 here unless
already set) of the GPU's memory, so torch fits beside it.
"""

import argparse
import dataclasses
import gc
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence

# Before JAX starts: leave half of the GPU's memory to torch.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.bench_output import (  # noqa: E402
    log, max_rel_diff, median_ms, table)
from benchmarks.jax_steps import SGD, sgd_train_step  # noqa: E402
from gcp_jax import backend, ops, parallel  # noqa: E402
from gcp_jax.models import create_model  # noqa: E402
from gcp_jax.models.summary import summarize  # noqa: E402
from gcp_jax.train.steps import make_eval_step  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch_reference import ops as torch_ops  # noqa: E402
from torch_reference import resnet as torch_resnet  # noqa: E402

try:
  import torchvision
except ImportError:   # e.g. beside the CPU torch wheel of the dev machines
  torchvision = None

NUM_ITERS = 5
HEAD_TOLERANCE = 1e-3     # relative, float32 against float32
LEARNING_RATE = 0.1
SEED = 0
TARGETS = {   # row key -> minimum speed-up over its anchor
    "head_newton_schulz": 6.0, "step_fp32": 2.0, "step_bf16": 1.3}
MAX_STEP_COMPILE_S = 30.0
MAX_HEAD_COMPILE_S = 2.0


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Models and shapes of one run."""
  batch: int
  image_size: int
  num_classes: int
  head_hw: int          # side of the head's feature map
  head_channels: int
  isqrt_model: str
  gap_model: str
  torch_arch: str
  torch_options: tuple[tuple[str, object], ...]
  matmul_size: int


FULL = Sizes(batch=128, image_size=224, num_classes=1000, head_hw=14,
             head_channels=256, isqrt_model="resnet50_isqrt",
             gap_model="resnet50_gap", torch_arch="resnet50",
             torch_options=(("dim", 256),), matmul_size=8192)
TINY = Sizes(batch=8, image_size=16, num_classes=10, head_hw=4,
             head_channels=16, isqrt_model="resnet_tiny_isqrt",
             gap_model="resnet_tiny_gap", torch_arch="resnet_tiny",
             torch_options=(("dim", 16), ("width", 8), ("small_input", True)),
             matmul_size=256)


@dataclasses.dataclass
class Row:
  key: str
  what: str
  ms: float
  images: int = 0           # per call, for images/s
  anchor: str | None = None  # key of the row this one is compared with
  compile_s: float | None = None
  tflops: float | None = None


# ------------------------------------------------------------------ timing


def torch_device() -> torch.device:
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_sync() -> None:
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def compiled(fn: Callable, *args) -> tuple[jax.stages.Compiled, float]:
  """`fn` (a jitted function) lowered and compiled for `args`; seconds."""
  start = time.perf_counter()
  out = fn.lower(*args).compile()
  return out, time.perf_counter() - start


def bf16_matmul_tflops(size: int, repeats: int) -> float:
  """Measured TFLOP/s of a (size x size) @ (size x size) bfloat16 product."""
  a = jax.random.normal(jax.random.key(1), (size, size), jnp.bfloat16)
  mm, _ = compiled(jax.jit(lambda x, y: x @ y), a, a)
  ms = median_ms(lambda: jax.block_until_ready(mm(a, a)), repeats)
  return 2 * size ** 3 / (ms * 1e-3) / 1e12


# -------------------------------------------------------------------- head


def bench_heads(sizes: Sizes, repeats: int) -> list[Row]:
  log("head")
  rng = np.random.default_rng(SEED)
  c, hw, b = sizes.head_channels, sizes.head_hw, sizes.batch
  x_np = np.maximum(rng.standard_normal((b, hw, hw, c), np.float32), 0.0)
  w_np = rng.standard_normal((b, c * (c + 1) // 2), np.float32)

  device = torch_device()
  x_t = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy()).to(device)
  w_t = torch.from_numpy(w_np).to(device)

  def torch_call():
    x = x_t.detach().requires_grad_(True)
    z = torch_ops.fmpn_head(x, NUM_ITERS)
    (gx,) = torch.autograd.grad(z, x, w_t)
    torch_sync()
    return z, gx

  z_ref, gx_ref = (t.detach().cpu().numpy() for t in torch_call())
  rows = [Row("head_torch", "head fwd+bwd, reference autograd Functions "
              "(torch fp32)", median_ms(torch_call, repeats), b)]

  x, w = jnp.asarray(x_np), jnp.asarray(w_np)
  for method in ("newton_schulz", "eigh"):
    def fwd_bwd(x, w, method=method):
      head = lambda f: ops.triu_vec(  # noqa: E731
          ops.pooled_isqrt(f, NUM_ITERS, method=method))
      z, vjp = jax.vjp(head, x)
      return z, vjp(w)[0]
    fn, seconds = compiled(backend.jit(fwd_bwd), x, w)
    z, gx = fn(x, w)
    z, gx = np.asarray(z), np.transpose(np.asarray(gx), (0, 3, 1, 2))
    for what, got, want in (("output", z, z_ref), ("gradient", gx, gx_ref)):
      err = max_rel_diff(got, want)
      log(f"  {method} {what} vs torch: max relative difference {err:.1e}")
      if not err <= HEAD_TOLERANCE:
        raise SystemExit(f"head {method}: {what} differs from the torch "
                         f"reference by {err:.1e} > {HEAD_TOLERANCE:.0e}; "
                         "the timings would not compare the same function.")
    ms = median_ms(lambda fn=fn: jax.block_until_ready(fn(x, w)), repeats)
    rows.append(Row(f"head_{method}", f"head, `pooled_isqrt` {method}", ms,
                    b, "head_torch", seconds))
  return rows


# -------------------------------------------------------------- train steps


def make_batch(sizes: Sizes, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((sizes.batch, sizes.image_size,
                               sizes.image_size, 3), np.float32),
          rng.integers(0, sizes.num_classes, sizes.batch, dtype=np.int32))


def check_loss(name: str, loss: float) -> None:
  log(f"  {name}: first loss {loss:.4f}")
  if not math.isfinite(loss):
    raise SystemExit(f"{name}: the first step's loss is {loss}; the timings "
                     "would not be of a working step.")


def jax_train_row(key: str, what: str, model_name: str, dtype, sizes: Sizes,
                  steps: int, anchor: str | None, matmul_tflops: float
                  ) -> Row:
  log(key)
  mesh = parallel.create_mesh()
  model = create_model(model_name, sizes.num_classes,
                       bn_axis_name=parallel.DATA_AXIS, dtype=dtype)
  schedule = optax.constant_schedule(LEARNING_RATE)
  step, state, _ = sgd_train_step(model, mesh, sizes.image_size, schedule,
                                  SEED)
  x, y = make_batch(sizes, SEED)
  batch = parallel.host_batch_to_global(mesh, {"image": x, "label": y})
  fn, seconds = compiled(step, state, batch)
  state, metrics = fn(state, batch)
  check_loss(key, float(metrics["loss_sum"] / metrics["count"]))

  def call():
    nonlocal state
    state, metrics = fn(state, batch)
    jax.block_until_ready((state, metrics))

  ms = median_ms(call, steps)
  flops = 3 * 2 * summarize(model, sizes.image_size).gmacs * 1e9 * sizes.batch
  tflops = flops / (ms * 1e-3) / 1e12
  log(f"  {ms:.1f} ms, {tflops:.3g} TFLOP/s "
      f"({100 * tflops / matmul_tflops:.0f} % of the bf16 matmul rate)")
  return Row(key, what, ms, sizes.batch, anchor, seconds, tflops)


def jax_eval_row(key: str, what: str, dtype, sizes: Sizes, steps: int
                 ) -> Row:
  log(key)
  mesh = parallel.create_mesh()
  model = create_model(sizes.isqrt_model, sizes.num_classes, dtype=dtype)
  _, state, _ = sgd_train_step(model, mesh, sizes.image_size,
                               optax.constant_schedule(LEARNING_RATE), SEED)
  x, y = make_batch(sizes, SEED)
  batch = parallel.host_batch_to_global(
      mesh, {"image": x, "label": y,
             "mask": np.ones(sizes.batch, np.float32)})
  fn, seconds = compiled(make_eval_step(model, mesh), state, batch)
  sums = fn(state, batch)
  if float(sums["count"]) != sizes.batch:
    raise SystemExit(f"{key}: counted {float(sums['count'])} examples, not "
                     f"{sizes.batch}.")
  ms = median_ms(lambda: jax.block_until_ready(fn(state, batch)), steps)
  return Row(key, what, ms, sizes.batch, None, seconds)


def torch_train_row(key: str, what: str, model: torch.nn.Module,
                    sizes: Sizes, steps: int, amp: bool,
                    anchor: str | None = None) -> Row:
  """Eager SGD steps of `model`; with `amp`, autocast bfloat16 and
  channels_last."""
  log(key)
  device = torch_device()
  torch.manual_seed(SEED)
  model = model.to(device).train()
  x_np, y_np = make_batch(sizes, SEED)
  x = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy()).to(device)
  y = torch.from_numpy(y_np.astype(np.int64)).to(device)
  if amp:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE,
                        momentum=SGD["momentum"],
                        weight_decay=SGD["weight_decay"])
  losses = []

  def call():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
      loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    torch_sync()
    if not losses:
      losses.append(loss.item())

  call()
  check_loss(key, losses[0])
  return Row(key, what, median_ms(call, steps), sizes.batch, anchor)


def free_torch_memory() -> None:
  """Returns the memory of the last torch row's model to the GPU."""
  gc.collect()
  if torch.cuda.is_available():
    torch.cuda.empty_cache()


def torch_isqrt_model(sizes: Sizes, functions: bool) -> torch.nn.Module:
  return torch_resnet.build(sizes.torch_arch, sizes.num_classes,
                            functions=functions, **dict(sizes.torch_options))


def torch_gap_model(sizes: Sizes) -> tuple[torch.nn.Module, str]:
  if torchvision is not None and sizes is FULL:
    return (torchvision.models.resnet50(num_classes=sizes.num_classes),
            "torchvision `resnet50`")
  return (torch_resnet.build(sizes.torch_arch, sizes.num_classes, head="gap",
                             **dict(sizes.torch_options)),
          f"torch reference `{sizes.torch_arch}` GAP")


# ------------------------------------------------------------------ report


def speedups(rows: Sequence[Row]) -> dict[str, float]:
  by_key = {r.key: r for r in rows}
  return {r.key: by_key[r.anchor].ms / r.ms for r in rows
          if r.anchor in by_key}


def report(rows: Sequence[Row], matmul_tflops: float) -> str:
  ratio = speedups(rows)
  lines = []
  for r in rows:
    lines.append([
        r.what, f"{r.ms:.2f}",
        f"{r.images / (r.ms * 1e-3):.0f}" if r.images else "",
        f"{ratio[r.key]:.2f}x" if r.key in ratio else
        ("1.00x (anchor)" if any(o.anchor == r.key for o in rows) else ""),
        "" if r.compile_s is None else f"{r.compile_s:.1f}",
        "" if r.tflops is None else
        f"{r.tflops:.3g} ({100 * r.tflops / matmul_tflops:.0f} %)"])
  return table(["what", "ms", "img/s", "vs anchor", "compile s",
                "TFLOP/s (of bf16 matmul)"], lines, markdown=True)


def targets(rows: Sequence[Row]) -> list[dict]:
  ratio = speedups(rows)
  out = [{"target": f"{key} >= {need}x its anchor", "value": ratio.get(key),
          "met": ratio.get(key, 0.0) >= need} for key, need in TARGETS.items()]
  for r in rows:
    if r.compile_s is None:
      continue
    limit = (MAX_HEAD_COMPILE_S if r.key.startswith("head")
             else MAX_STEP_COMPILE_S)
    out.append({"target": f"{r.key} compile <= {limit:.0f} s",
                "value": r.compile_s, "met": r.compile_s <= limit})
  return out


def versions() -> dict[str, str]:
  import flax
  return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
          "device": jax.devices()[0].device_kind,
          "backend": backend.platform(), "jax": jax.__version__,
          "flax": flax.__version__, "optax": optax.__version__,
          "torch": torch.__version__,
          "torchvision": getattr(torchvision, "__version__", "absent"),
          "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
          "compiler_options": repr(backend.compiler_options())}


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=20,
                      help="timed calls per row (median reported)")
  parser.add_argument("--json", default="gpu_check.json",
                      help="where to write the rows, targets and versions")
  parser.add_argument("--tiny", action="store_true",
                      help="small models and batches (checks the script on "
                           "a CPU; the numbers mean nothing)")
  args = parser.parse_args(argv)
  sizes = TINY if args.tiny else FULL
  if sizes.batch % jax.device_count():
    raise SystemExit(f"batch {sizes.batch} does not split over "
                     f"{jax.device_count()} devices.")
  info = versions()
  log(f"gpu_check on {info['device']}: {info}")
  start = time.perf_counter()
  matmul = bf16_matmul_tflops(sizes.matmul_size, args.steps)
  log(f"bf16 matmul: {matmul:.3g} TFLOP/s")

  rows = bench_heads(sizes, args.steps)
  rows.append(torch_train_row(
      "step_fp32_torch", f"train step, torch reference `{sizes.torch_arch}` "
      "iSQRT, Functions head, fp32", torch_isqrt_model(sizes, functions=True),
      sizes, args.steps, amp=False))
  free_torch_memory()
  rows.append(jax_train_row(
      "step_fp32", "train step, gcp-jax fp32", sizes.isqrt_model,
      jnp.float32, sizes, args.steps, "step_fp32_torch", matmul))
  rows.append(torch_train_row(
      "step_bf16_torch", "train step, torch AMP-bf16, channels_last, fp32 "
      "head", torch_isqrt_model(sizes, functions=False), sizes, args.steps,
      amp=True))
  free_torch_memory()
  rows.append(jax_train_row(
      "step_bf16", "train step, gcp-jax bf16 backbone, fp32 head",
      sizes.isqrt_model, jnp.bfloat16, sizes, args.steps, "step_bf16_torch",
      matmul))
  gap_model, gap_name = torch_gap_model(sizes)
  rows.append(torch_train_row(
      "gap_bf16_torch", f"train step, {gap_name}, AMP-bf16, channels_last",
      gap_model, sizes, args.steps, amp=True))
  del gap_model
  free_torch_memory()
  rows.append(jax_train_row(
      "gap_bf16", f"train step, gcp-jax `{sizes.gap_model}` bf16",
      sizes.gap_model, jnp.bfloat16, sizes, args.steps, "gap_bf16_torch",
      matmul))
  for dtype, name in ((jnp.float32, "fp32"), (jnp.bfloat16, "bf16")):
    rows.append(jax_eval_row(f"eval_{name}", f"eval step, gcp-jax "
                             f"`{sizes.isqrt_model}` {name}", dtype, sizes,
                             args.steps))

  info["wall_s"] = round(time.perf_counter() - start, 1)
  info["bf16_matmul_tflops"] = matmul
  result = {"versions": info, "sizes": dataclasses.asdict(sizes),
            "rows": [dataclasses.asdict(r) for r in rows],
            "speedups": speedups(rows), "targets": targets(rows)}
  with open(args.json, "w") as f:
    json.dump(result, f, indent=2)
  print(f"{info['device']}, jax {info['jax']}, torch {info['torch']}, "
        f"{info['date']}; batch {sizes.batch}, {sizes.image_size} px; "
        f"median of {args.steps} calls; bf16 matmul {matmul:.3g} TFLOP/s; "
        f"{info['wall_s']:.0f} s in all.\n")
  print(report(rows, matmul))
  print()
  print(table(["target", "value", "met"],
              [[t["target"], "" if t["value"] is None else
                f"{t['value']:.2f}", "yes" if t["met"] else "NO"]
               for t in result["targets"]], markdown=True))
  return result


if __name__ == "__main__":
  main()
