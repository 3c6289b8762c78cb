"""Hand-run benchmark of training-step and input-pipeline throughput.

Not a test. Measures images/s of (1) one SGD training step of ResNet-50 +
iSQRT-COV in gcp-jax and in an equivalent eager PyTorch model, and (2) the
gcp-jax input pipeline, on whatever CPU it runs on.

What is measured
  1. Training step. The fast-MPN-COV ImageNet model and recipe
     (docs/method.md §2.4, §7.1, §7.2, §8.5): torchvision-topology
     ResNet-50 (Bottleneck with the stride on the 3x3 conv, "v1.5"; layer4
     at stride 1, so a 14 x 14 map at 224 px), reduction block 1x1 conv
     2048 -> 256 + BN + ReLU, covariance (M = 196), Newton-Schulz square
     root with N = 5, row-major upper triangle (32,896-d), FC to 1000
     classes: 56,929,832 parameters. One step = forward in train mode
     (BatchNorm on batch statistics, running averages updated), mean
     cross-entropy, backward, and the update of SGD with momentum 0.9 and
     weight decay 1e-4 coupled into the gradient on
     every parameter (PyTorch semantics), lr 0.1. Global batch 16 of
     224 x 224 x 3 float32 images, everything float32.
     * gcp-jax: the step `main.py` runs. `create_model("resnet50_isqrt",
       1000, bn_axis_name=DATA_AXIS)` (synchronised BN, the default config),
       `create_optimizer` ("sgd") on the fast-MPN-COV `create_lr_schedule`
       ("step" at epochs 30/45/60, ImageNet's 80,072 steps per epoch), a
       replicated `TrainState`, and `make_train_step(model, tx, schedule,
       mesh)` on `parallel.create_mesh()`, which must span exactly one CPU
       device (shard_map under jit, state donated, gradients and BN
       statistics pmean'ed over the 1-device axis, metrics computed).
       `--isqrt-method eigh` trains the same function with the head's
       Newton-Schulz polynomial evaluated on eigenvalues
       (`representation_options={"num_iters": 5, "method": "eigh"}`).
     * torch: the same network in eager PyTorch, `torch_reference.resnet`
       (NCHW, default contiguous layout), with the reference's op choices where
       gcp-jax differs: covariance X Ibar X^T with the M x M centring matrix
       and `bmm`; Newton-Schulz (docs/method.md §3.1) as plain tensor code
       differentiated by autograd, not the reference's hand-written
       backward `Function`; triu by an index gather;
       `nn.Linear(32896, 1000)`. Initialisation as the reference (convs
       kaiming-normal fan_out, BN 1/0, Linear default).
       `torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=1e-4)`,
       `F.cross_entropy`, `model.train()`; one step = `zero_grad`, forward,
       `backward`, `step`. `torch.set_num_threads(2)`.
     Before timing, the script checks that both models have exactly
     56,929,832 trainable parameters and that the first step's loss is
     finite (it prints both losses, about ln 1000 = 6.9 at initialisation).
     Inputs: `NUM_BATCHES` fixed batches of N(0, 1) images and uniform
     labels, made once and used in turn; for JAX they are put on the device
     (`host_batch_to_global`) before timing, for torch they are tensors.
  2. Input pipeline: `create_datasets(config).train_batches(epoch)` and
     `.eval_batches()`, iterated to the end, numpy batches on the host (no
     device transfer, no training).
     * digits: the data config of `configs/default.py` (the default run:
       32 px, inception crop with scale >= 0.35 and flip, batch 64, eval
       batch 128, decoded images cached in memory), with the PNG cache
       written into a temporary directory (`data_dir`); once more with
       `cache_decoded=False`, so every epoch decodes the PNGs.
     * jpeg224: an image folder written into a temporary directory:
       `NUM_JPEG_TRAIN` train and `NUM_JPEG_VAL` val images in 10 classes,
       375 x 500 RGB JPEGs (quality 90) of a random smooth colour field
       (bicubic upsampling of 12 x 16 uniform noise) plus N(0, 20^2) pixel
       noise: files of ~100 KiB, near ImageNet's mean (~110 KB; uniform
       noise would give ~170 KiB and slower decoding). Data config:
       `image_folder`, 224 px, inception crop (scale >= 0.08) + flip, eval
       resize 256 -> centre 224, batch 64 and eval batch 64, decoding every
       epoch (`cache_decoded=False`), decoding threads AUTOTUNE (the
       defaults).
     Reported: "setup" (the `create_datasets` call: scanning the folder;
     for the first digits row also writing the PNG cache, and decoding it
     when cached), training images/s of epoch 0 (the first pass, with
     tf.data's warm-up) and of epoch 1, and real images/s of the second of
     two full evaluation passes (padding of the last batch not counted).

How it is timed
  Wall time by `time.perf_counter`. A JAX step is ended by
  `jax.block_until_ready` on the new state and the metrics, so each timed
  step is one complete step (no overlap with the next dispatch); its first
  call, which compiles, is reported separately, then `WARMUP_STEPS` untimed
  steps, then `--steps` timed ones. Torch steps are synchronous on the CPU;
  the same warm-up, then `--steps` timed steps, after all JAX timing (not
  interleaved, so that OpenMP worker threads spinning after torch calls
  cannot slow XLA). Reported per framework: the median step time and
  16 / median images/s, with the fastest and slowest step. Pipelines are
  timed per full epoch or pass, from creating the iterator to exhausting
  it.

  Allocator. `main.py` makes glibc keep freed memory on a CPU-only JAX
  (`gcp_jax.allocator`); this script leaves the allocator alone, so both
  frameworks run with glibc's defaults unless launched with
  `GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736`,
  the same settings, which then apply to both (RESULTS.md, "Allocator").

  The machine may be shared. For every timed part the script reports the
  CPU time other processes (and, as steal time, other VMs) used meanwhile,
  in cores: (busy jiffies of all CPUs in /proc/stat) - (this process's user
  + system time), divided by the wall time (Linux only; NaN elsewhere).
  About 0 means the cores were this process's; on 2 cores, 0.5 means
  another process held a quarter of the machine. The 1-minute load
  average is printed at start and end.

Usage (from the repo root)
  python benchmarks/train_throughput.py [--steps N] [--skip-torch]
      [--skip-data] [--isqrt-method newton_schulz|eigh] [--markdown]
  Tables go to stdout (aligned text, or markdown with --markdown); progress
  goes to stderr.
"""

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

# On a GPU JAX would reserve 75 % of its memory; torch runs in this process.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.bench_output import log, table  # noqa: E402
from benchmarks.jax_steps import SGD, sgd_train_step  # noqa: E402
from configs import default as default_config  # noqa: E402
from gcp_jax import parallel  # noqa: E402
from gcp_jax.data.pipeline import (create_datasets,  # noqa: E402
                                   default_data_config)
from gcp_jax.models import create_model  # noqa: E402
from gcp_jax.train.schedules import create_lr_schedule  # noqa: E402

try:
  import torch
  from torch_reference import resnet as torch_resnet
except ImportError:
  torch = None

MODEL = "resnet50_isqrt"
NUM_CLASSES = 1000
IMAGE_SIZE = 224
BATCH = 16
NUM_PARAMS = 56_929_832
DIM = 256
NUM_ITERS = 5
LEARNING_RATE = 0.1
MOMENTUM = SGD["momentum"]
WEIGHT_DECAY = SGD["weight_decay"]
MILESTONES = (30, 45, 60)
NUM_EPOCHS = 65
IMAGENET_STEPS_PER_EPOCH = 1_281_167 // BATCH
NUM_BATCHES = 4
WARMUP_STEPS = 2
TORCH_THREADS = 2
SEED = 0

JPEG_SHAPE = (375, 500)
JPEG_CLASSES = 10
NUM_JPEG_TRAIN = 512
NUM_JPEG_VAL = 256
JPEG_NOISE = 20.0
JPEG_QUALITY = 90
PIPELINE_BATCH = 64


# ------------------------------------------------------------ measurement


def _busy_jiffies() -> int | None:
  """Busy time of all CPUs since boot, in clock ticks (Linux), or None."""
  try:
    with open("/proc/stat") as f:
      fields = [int(v) for v in f.readline().split()[1:]]
  except OSError:
    return None
  user, nice, system, _, _, irq, softirq, steal = fields[:8]
  return user + nice + system + irq + softirq + steal


class Usage:
  """Wall time of a block and the CPU other processes used during it.

  with Usage() as usage: ...; then usage.wall (s) and usage.others (cores).
  """

  def __enter__(self) -> "Usage":
    self._busy, self._own = _busy_jiffies(), sum(os.times()[:2])
    self._start = time.perf_counter()
    return self

  def __exit__(self, *exc) -> None:
    self.wall = time.perf_counter() - self._start
    busy, own = _busy_jiffies(), sum(os.times()[:2])
    if busy is None or self._busy is None:
      self.others = math.nan
      return
    tick = os.sysconf("SC_CLK_TCK")
    other_s = (busy - self._busy) / tick - (own - self._own)
    self.others = max(other_s, 0.0) / self.wall


def time_steps(step: Callable[[int], None], steps: int) -> dict:
  """Times `step(i)`: the first call, `WARMUP_STEPS` untimed, `steps` timed.

  Returns {'first_s', 'median_ms', 'min_ms', 'max_ms', 'images_per_s',
  'others'}.
  """
  start = time.perf_counter()
  step(0)
  first = time.perf_counter() - start
  for i in range(WARMUP_STEPS):
    step(1 + i)
  times = []
  with Usage() as usage:
    for i in range(steps):
      start = time.perf_counter()
      step(1 + WARMUP_STEPS + i)
      times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return {"first_s": first, "median_ms": 1e3 * median,
          "min_ms": 1e3 * min(times), "max_ms": 1e3 * max(times),
          "images_per_s": BATCH / median, "others": usage.others}


def make_batches() -> list[tuple[np.ndarray, np.ndarray]]:
  """`NUM_BATCHES` (NHWC float32 N(0, 1) images, int32 labels)."""
  rng = np.random.default_rng(SEED)
  return [(rng.standard_normal((BATCH, IMAGE_SIZE, IMAGE_SIZE, 3),
                               dtype=np.float32),
           rng.integers(0, NUM_CLASSES, BATCH, dtype=np.int32))
          for _ in range(NUM_BATCHES)]


def check_first_loss(name: str, loss: float) -> None:
  log(f"  {name}: loss of the first step {loss:.4f}")
  if not math.isfinite(loss):
    raise SystemExit(f"{name}: the first step's loss is {loss}; the timings "
                     "would not be of a working step.")


def check_params(name: str, count: int) -> None:
  log(f"  {name}: {count:,} parameters")
  if count != NUM_PARAMS:
    raise SystemExit(f"{name} has {count:,} parameters, not {NUM_PARAMS:,}; "
                     "the two steps would not train the same model.")


# ---------------------------------------------------------------- gcp-jax


def bench_jax(batches: Sequence[tuple[np.ndarray, np.ndarray]],
              steps: int, isqrt_method: str) -> dict:
  """The library's training step on a 1-device mesh."""
  log("gcp-jax")
  if jax.device_count() != 1:
    raise SystemExit(f"{jax.device_count()} devices: the benchmark needs a "
                     "process with exactly one (unset XLA_FLAGS' "
                     "--xla_force_host_platform_device_count).")
  mesh = parallel.create_mesh()
  model = create_model(MODEL, NUM_CLASSES, bn_axis_name=parallel.DATA_AXIS,
                       representation_options={"num_iters": NUM_ITERS,
                                               "method": isqrt_method})
  schedule = create_lr_schedule(
      ml_collections.ConfigDict({"name": "step", "milestones": MILESTONES,
                                 "gamma": 0.1}),
      LEARNING_RATE, IMAGENET_STEPS_PER_EPOCH, NUM_EPOCHS)
  train_step, state, num_params = sgd_train_step(model, mesh, IMAGE_SIZE,
                                                 schedule, SEED)
  check_params("gcp-jax", num_params)
  device_batches = [parallel.host_batch_to_global(
      mesh, {"image": x, "label": y}) for x, y in batches]
  first_loss = []

  def step(i: int) -> None:
    nonlocal state
    state, metrics = train_step(state, device_batches[i % NUM_BATCHES])
    jax.block_until_ready((state, metrics))
    if i == 0:
      first_loss.append(float(metrics["loss_sum"] / metrics["count"]))
      check_first_loss("gcp-jax", first_loss[0])

  result = time_steps(step, steps)
  result["first_loss"] = first_loss[0]
  return result


# ------------------------------------------------------------------ torch


def bench_torch(batches: Sequence[tuple[np.ndarray, np.ndarray]],
                steps: int) -> dict:
  """The eager PyTorch training step of the same model."""
  log("torch")
  torch.manual_seed(SEED)
  model = torch_resnet.build("resnet50", NUM_CLASSES, dim=DIM).train()
  check_params("torch", sum(p.numel() for p in model.parameters()))
  optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE,
                              momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
  torch_batches = [(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                    torch.from_numpy(y.astype(np.int64)))
                   for x, y in batches]
  first_loss = []

  def step(i: int) -> None:
    x, y = torch_batches[i % NUM_BATCHES]
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    if i == 0:
      first_loss.append(loss.item())
      check_first_loss("torch", first_loss[0])

  result = time_steps(step, steps)
  result["first_loss"] = first_loss[0]
  return result


# --------------------------------------------------------- input pipeline


def write_jpeg_folder(root: str) -> float:
  """The jpeg224 image folder (see the docstring); returns the mean file
  size in KiB."""
  rng = np.random.default_rng(SEED)
  sizes = []
  for split, count in (("train", NUM_JPEG_TRAIN), ("val", NUM_JPEG_VAL)):
    for i in range(count):
      folder = os.path.join(root, split, f"class{i % JPEG_CLASSES}")
      os.makedirs(folder, exist_ok=True)
      field = rng.uniform(0.0, 255.0, (1, 12, 16, 3)).astype(np.float32)
      image = tf.image.resize(field, JPEG_SHAPE, method="bicubic")[0]
      image = image.numpy() + rng.normal(0.0, JPEG_NOISE, image.shape)
      encoded = tf.io.encode_jpeg(
          np.clip(image, 0, 255).astype(np.uint8), quality=JPEG_QUALITY)
      path = os.path.join(folder, f"{i:05d}.jpg")
      tf.io.write_file(path, encoded)
      sizes.append(len(encoded.numpy()))
  return float(np.mean(sizes)) / 1024


def pass_rate(batches: Iterator[dict[str, np.ndarray]],
              real: Callable[[dict[str, np.ndarray]], int]
              ) -> tuple[float, float]:
  """Iterates `batches` to the end; -> (real images/s, others' cores)."""
  images = 0
  with Usage() as usage:
    for batch in batches:
      images += real(batch)
  return images / usage.wall, usage.others


def bench_pipeline(name: str, config: ml_collections.ConfigDict) -> dict:
  """Setup time, train epochs 0 and 1, and the second eval pass."""
  log(f"pipeline {name}")
  start = time.perf_counter()
  datasets = create_datasets(config)
  res = {"name": name, "setup_s": time.perf_counter() - start,
         "image_size": config.image_size,
         "batch": config.global_batch_size, "cached": config.cache_decoded,
         "num_train": datasets.steps_per_epoch() * config.global_batch_size,
         "num_eval": datasets.info.num_eval}

  def train_count(batch: dict[str, np.ndarray]) -> int:
    return len(batch["label"])

  def eval_count(batch: dict[str, np.ndarray]) -> int:
    return int(batch["mask"].sum())

  res["epoch0"], _ = pass_rate(datasets.train_batches(0), train_count)
  res["epoch1"], res["train_others"] = pass_rate(datasets.train_batches(1),
                                                 train_count)
  pass_rate(datasets.eval_batches(), eval_count)
  res["eval"], res["eval_others"] = pass_rate(datasets.eval_batches(),
                                              eval_count)
  log(f"  train {res['epoch1']:.0f} images/s, eval {res['eval']:.0f}")
  return res


def bench_pipelines(tmp: str) -> tuple[list[dict], float]:
  """digits (cached and not) and jpeg224; -> (results, mean JPEG KiB)."""
  results = []
  for cached in (True, False):
    config = default_config.get_config().data
    config.data_dir = os.path.join(tmp, "digits")
    config.cache_decoded = cached
    results.append(bench_pipeline("digits", config))
  log("writing the JPEG folder")
  root = os.path.join(tmp, "jpeg224")
  kib = write_jpeg_folder(root)
  config = default_data_config()
  config.name, config.data_dir = "image_folder", root
  config.image_size = IMAGE_SIZE
  config.global_batch_size = config.eval_batch_size = PIPELINE_BATCH
  results.append(bench_pipeline("jpeg224", config))
  return results, kib


# ----------------------------------------------------------------- report


def report_steps(results: dict[str, dict], steps: int,
                 markdown: bool) -> str:
  rows = [[name, f"{r['images_per_s']:.2f}", f"{r['median_ms']:.0f}",
           f"{r['min_ms']:.0f} - {r['max_ms']:.0f}", f"{r['first_s']:.1f}",
           f"{r['first_loss']:.3f}", f"{r['others']:.2f}"]
          for name, r in results.items()]
  out = [f"Training step, {MODEL} ({NUM_PARAMS:,} params), batch {BATCH} x "
         f"{IMAGE_SIZE}^2, fp32, SGD; median of {steps} steps after "
         f"{WARMUP_STEPS} warm-up steps:", "",
         table(["framework", "images/s", "median ms", "min - max ms",
                "first step s", "first loss", "others"], rows,
               markdown)]
  if len(results) == 2:
    ratio = (results["gcp-jax"]["images_per_s"]
             / results["torch"]["images_per_s"])
    verdict = "MET" if ratio >= 1.0 else "NOT MET"
    out += ["", f"gcp-jax / torch throughput: {ratio:.2f}x (target >= "
            f"1.00x: {verdict})"]
  return "\n".join(out)


def report_pipelines(results: list[dict], kib: float, markdown: bool) -> str:
  rows = [[r["name"], str(r["image_size"]), str(r["batch"]),
           "yes" if r["cached"] else "no", f"{r['setup_s']:.1f}",
           str(r["num_train"]), f"{r['epoch0']:.0f}", f"{r['epoch1']:.0f}",
           f"{r['train_others']:.2f}", str(r["num_eval"]),
           f"{r['eval']:.0f}", f"{r['eval_others']:.2f}"]
          for r in results]
  return "\n".join([
      f"Input pipeline, host numpy batches (jpeg224: {NUM_JPEG_TRAIN} + "
      f"{NUM_JPEG_VAL} JPEGs of {JPEG_SHAPE[0]}x{JPEG_SHAPE[1]}, mean "
      f"{kib:.0f} KiB):", "",
      table(["data", "px", "batch", "cached", "setup s", "train images",
             "epoch 0 img/s", "epoch 1 img/s", "others (train)",
             "eval images", "eval img/s", "others (eval)"], rows,
            markdown)])


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=10,
                      help="timed training steps per framework; the median "
                      "is reported (default 10)")
  parser.add_argument("--skip-torch", action="store_true",
                      help="leave out the PyTorch training step")
  parser.add_argument("--skip-data", action="store_true",
                      help="leave out the input-pipeline measurements")
  parser.add_argument("--isqrt-method", default="newton_schulz",
                      choices=("newton_schulz", "eigh"),
                      help="how the gcp-jax head evaluates its square root "
                      "(the same function; default newton_schulz)")
  parser.add_argument("--markdown", action="store_true",
                      help="print markdown tables instead of aligned text")
  args = parser.parse_args(argv)
  if args.steps < 1:
    parser.error("--steps must be at least 1")

  use_torch = not args.skip_torch and torch is not None
  if not args.skip_torch and torch is None:
    print("note: torch is not installed; the torch step is skipped.")
  versions = (f"jax {jax.__version__}, backend {jax.default_backend()}, "
              f"tensorflow {tf.__version__}")
  if use_torch:
    torch.set_num_threads(TORCH_THREADS)
    versions += (f", torch {torch.__version__} "
                 f"({torch.get_num_threads()} threads)")
  print(f"{versions}; {os.cpu_count()} CPUs; "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; gcp-jax isqrt method "
        f"{args.isqrt_method}; load average at start "
        f"{os.getloadavg()[0]:.2f}.\n")

  batches = make_batches()
  steps = {"gcp-jax": bench_jax(batches, args.steps, args.isqrt_method)}
  if use_torch:
    steps["torch"] = bench_torch(batches, args.steps)
  print(report_steps(steps, args.steps, args.markdown))
  if not args.skip_data:
    with tempfile.TemporaryDirectory() as tmp:
      pipelines, kib = bench_pipelines(tmp)
    print("\n" + report_pipelines(pipelines, kib, args.markdown))
  print("\nothers: CPU time used by other processes during the timed "
        "part, in cores (0 = uncontended; the machine has "
        f"{os.cpu_count()}).")
  print(f"Load average at end {os.getloadavg()[0]:.2f}.")


if __name__ == "__main__":
  main()
