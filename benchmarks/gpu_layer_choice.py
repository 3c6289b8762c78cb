"""The GPU choices of `gcp_jax.backend`, measured (not a test).

Run on a machine with one NVIDIA GPU, from the repo root:

  python benchmarks/gpu_layer_choice.py [--json out.json] [--steps 20]

It needs jax, flax, optax, ml_collections and numpy; no torch, no
TensorFlow. Rows (ResNet-50 + iSQRT-COV train step, batch 128, 224 px, SGD
as `benchmarks/jax_steps.py`; median of `--steps` calls):

  conv     the GPU's choice: 1 x 1 convolutions as `nn.Conv`;
  dot      1 x 1 convolutions as `PointwiseConv` (a reshaped dot, the CPU's
           choice), forced here for the comparison; both in float32 and
           with a bfloat16 backbone, timed interleaved in one process;
  tpami    the seed recipe's ResNet-50 (`configs/imagenet_tpami.py`:
           'same' padding, 1001 outputs, MindSpore initialisation and label
           smoothing, bfloat16), as `main.py` builds it;
  triton   the GPU's choice with XLA's Triton GEMM fusion on
           (`--xla_gpu_enable_triton_gemm=true`), which the backend turns
           off because XLA once aborted compiling the step with it; built
           in a child process, so an abort is reported, not fatal.

`--tiny` runs every row on resnet_tiny at 16 px (checks the script on a
CPU; the numbers mean nothing there).
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.bench_output import interleaved_median_ms, log  # noqa: E402
from benchmarks.jax_steps import sgd_train_step  # noqa: E402
from configs import imagenet_tpami  # noqa: E402
from configs.common import model_config  # noqa: E402
from gcp_jax import backend, parallel  # noqa: E402
from gcp_jax.models import create_model  # noqa: E402
from gcp_jax.train import loop  # noqa: E402
from gcp_jax.train.optim import create_optimizer  # noqa: E402
from gcp_jax.train.state import initial_state  # noqa: E402
from gcp_jax.train.steps import make_train_step  # noqa: E402

SEED = 0


def sizes(tiny: bool) -> dict:
  if tiny:
    return {"model": "resnet_tiny_isqrt", "batch": 8, "image_size": 16}
  return {"model": "resnet50_isqrt", "batch": 128, "image_size": 224}


@contextlib.contextmanager
def one_by_one_as_dot(enabled: bool) -> Iterator[None]:
  """Within the block, models built and traced use `PointwiseConv` for
  1 x 1 convolutions whatever the backend (if `enabled`)."""
  if not enabled:
    yield
    return
  with mock.patch.object(backend, "pointwise_conv_as_dot",
                         return_value=True):
    yield


def batch_for(mesh, size: dict, num_classes: int) -> dict:
  rng = np.random.default_rng(SEED)
  x = rng.normal(size=(size["batch"], size["image_size"], size["image_size"],
                       3)).astype(np.float32)
  y = rng.integers(0, num_classes, size["batch"]).astype(np.int32)
  return parallel.host_batch_to_global(mesh, {"image": x, "label": y})


def compiled_step(step: Callable, state, batch) -> tuple[Callable, float]:
  start = time.perf_counter()
  fn = step.lower(state, batch).compile()
  return fn, time.perf_counter() - start


def isqrt_step(size: dict, dtype, as_dot: bool):
  """(compiled step, state, batch, compile seconds) of the iSQRT model."""
  mesh = parallel.create_mesh()
  with one_by_one_as_dot(as_dot):
    model = create_model(size["model"], 1000, dtype=dtype,
                         bn_axis_name=parallel.DATA_AXIS)
    step, state, _ = sgd_train_step(
        model, mesh, size["image_size"], optax.constant_schedule(0.1), SEED)
    batch = batch_for(mesh, size, 1000)
    fn, seconds = compiled_step(step, state, batch)
  return fn, state, batch, seconds


def tpami_step(size: dict):
  config = imagenet_tpami.get_config("resnet50_isqrt_d128")
  if size["model"] != "resnet50_isqrt":
    config.model = model_config("resnet_tiny_isqrt")
  mesh = parallel.create_mesh()
  model = loop.build_model(config, loop.model_outputs(config, 1000))
  schedule = optax.constant_schedule(config.learning_rate)
  tx = create_optimizer(config.optimizer, schedule)
  state = parallel.replicate(mesh, initial_state(
      model, tx, size["image_size"], SEED, init_scheme=config.init_scheme))
  step = make_train_step(model, tx, schedule, mesh,
                         label_smoothing=config.label_smoothing,
                         smoothing_style=config.label_smoothing_style)
  batch = batch_for(mesh, size, 1000)
  fn, seconds = compiled_step(step, state, batch)
  return fn, state, batch, seconds


def timed(rows: dict[str, tuple], steps: int) -> dict[str, dict]:
  """Runs each compiled step once (finite loss), then times them
  interleaved."""
  states = {}
  for key, (fn, state, batch, _) in rows.items():
    state, metrics = fn(state, batch)
    loss = float(metrics["loss_sum"] / metrics["count"])
    if not np.isfinite(loss):
      raise SystemExit(f"{key}: first loss {loss}")
    states[key] = state

  def caller(key):
    fn, _, batch, _ = rows[key]

    def call():
      states[key], metrics = fn(states[key], batch)
      jax.block_until_ready(metrics)
    return call

  keys = list(rows)
  medians = interleaved_median_ms([(caller(k), 1) for k in keys], steps)
  return {k: {"ms": ms, "compile_s": rows[k][3]}
          for k, ms in zip(keys, medians)}


def triton_child(tiny: bool, steps: int) -> dict:
  """This script's `--child` run with Triton GEMM on: its JSON or its
  failure."""
  env = dict(os.environ,
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                        + " --xla_gpu_enable_triton_gemm=true").strip())
  cmd = [sys.executable, os.path.abspath(__file__), "--child",
         "--steps", str(steps)] + (["--tiny"] if tiny else [])
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                        timeout=400)
  if proc.returncode != 0:
    return {"returncode": proc.returncode,
            "stderr_tail": proc.stderr[-1500:]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--json", default="gpu_layer_choice.json")
  parser.add_argument("--tiny", action="store_true")
  parser.add_argument("--child", action="store_true",
                      help="internal: the Triton row's child process")
  args = parser.parse_args(argv)
  size = sizes(args.tiny)
  if args.child:
    rows = {f"triton_{n}": isqrt_step(size, d, False)
            for n, d in (("fp32", jnp.float32), ("bf16", jnp.bfloat16))}
    print(json.dumps(timed(rows, args.steps)))
    return {}
  log(f"gpu_layer_choice on {jax.devices()[0].device_kind}, jax "
      f"{jax.__version__}, {size}")
  rows = {}
  for name, dtype in (("fp32", jnp.float32), ("bf16", jnp.bfloat16)):
    for choice in ("conv", "dot"):
      log(f"{choice}_{name}")
      rows[f"{choice}_{name}"] = isqrt_step(size, dtype, choice == "dot")
  log("tpami_bf16")
  rows["tpami_bf16"] = tpami_step(size)
  result = {"rows": timed(rows, args.steps)}
  log("triton (child process)")
  result["triton"] = triton_child(args.tiny, args.steps)
  result["versions"] = {"jax": jax.__version__,
                        "device": jax.devices()[0].device_kind,
                        "sizes": size, "steps": args.steps}
  with open(args.json, "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result, indent=2))
  return result


if __name__ == "__main__":
  main()
