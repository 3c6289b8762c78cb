"""Hand-run benchmark of the corruption-robustness evaluation (not a test).

What is measured
  1. End to end, `gcp_jax.train.robustness.run_robustness` (what
     `main.py --mode=robustness` runs) on the embedded digits corrupted on
     the fly: configs/default.py's model (resnet_tiny iSQRT, 32 px), trained
     for 3 steps only (throughput does not depend on the weights), all 450
     evaluation images, the 15 corruptions + 4 extra at one severity, plus
     the clean pass. Reported: wall time of the whole call (restore,
     compile, every pass, the files) and images / s over all passes; and
     the rates of single passes from the progress lines (the clean pass
     has no corruption: decoding, cropping and the model only).
  2. The library's cost per image at ImageNet-C's 224 x 224 (the share the
     corruption takes at full size): `gcp_jax.data.corruptions.corrupt` of
     one random-content 224 x 224 image, each corruption at `--severity`,
     median of `--repeats`.

Usage:
  python benchmarks/robustness_bench.py [--severity 3] [--repeats 3]
"""

import argparse
import io
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import numpy as np  # noqa: E402


def end_to_end(severity: int) -> None:
  from configs import default
  from gcp_jax.data import corruptions
  from gcp_jax.train import loop, robustness
  config = default.get_config()
  config.num_train_steps = 3
  config.robustness.corruptions = corruptions.CORRUPTIONS
  config.robustness.include_extra = True
  config.robustness.severities = (severity,)
  with tempfile.TemporaryDirectory() as workdir:
    loop.train_and_evaluate(config, workdir)
    start = time.monotonic()
    log = io.StringIO()
    results = robustness.run_robustness(config, workdir, stream=log)
    seconds = time.monotonic() - start
  rates = [float(m) for m in re.findall(r"(\d+) img/s", log.getvalue())]
  images = results["clean"]["count"] + sum(
      c["count"] for c in results["cells"].values())
  print(f"end to end: {len(results['cells']) + 1} passes, {images:.0f} "
        f"images of 32 px, {seconds:.1f} s, {images / seconds:.1f} img/s")
  print(f"per pass (progress lines): clean {rates[0]:.0f} img/s, corrupted "
        f"median {np.median(rates[1:]):.0f} img/s (min {min(rates[1:]):.0f},"
        f" max {max(rates[1:]):.0f})")


def per_corruption(severity: int, repeats: int) -> None:
  from gcp_jax.data import corruptions
  image = np.random.default_rng(0).integers(0, 256, (224, 224, 3),
                                            dtype=np.uint8)
  corruptions.corrupt(image, "fog", 1, 0)   # import and shim once
  print(f"| corruption (224 px, severity {severity}) | ms / image |")
  print("|---|---|")
  total = 0.0
  for name in corruptions.ALL_CORRUPTIONS:
    times = []
    for r in range(repeats):
      start = time.perf_counter()
      corruptions.corrupt(image, name, severity, r)
      times.append(time.perf_counter() - start)
    total += float(np.median(times))
    print(f"| {name} | {1000 * np.median(times):.1f} |")
  print(f"| all 19, one image each | {1000 * total:.0f} |")


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--severity", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  import jax
  import numpy
  import skimage
  import cv2
  print(f"jax {jax.__version__}, numpy {numpy.__version__}, scikit-image "
        f"{skimage.__version__}, opencv {cv2.__version__}, "
        f"{os.cpu_count()} CPUs")
  end_to_end(args.severity)
  per_corruption(args.severity, args.repeats)


if __name__ == "__main__":
  main()
