"""gcp-jax entry point: `python main.py --config configs/X.py --workdir DIR`.

Kept short on purpose: the work is done by library functions that tests and
notebooks import. Config values are overridden with `--config.key=value`;
unknown keys are an error (the config is locked).
"""

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Path to an ml_collections config file.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for results and logs.")
flags.mark_flags_as_required(["config", "workdir"])

MODES = ("probe",)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  config = FLAGS.config
  if config.mode not in MODES:
    raise app.UsageError(
        f"config.mode={config.mode!r} is not supported; valid modes: "
        f"{', '.join(MODES)}.")
  import jax  # after flag parsing, so --help stays fast
  from gcp_jax.analysis.descriptor_probe import run_probe
  logging.info("JAX %s, devices: %s", jax.__version__, jax.devices())
  os.makedirs(FLAGS.workdir, exist_ok=True)
  results = run_probe(config)
  rows = [r.__dict__ for r in results.values()]
  path = os.path.join(FLAGS.workdir, "probe_results.json")
  with open(path + ".tmp", "w") as f:
    json.dump({"config": config.to_dict(), "results": rows}, f, indent=2)
  os.replace(path + ".tmp", path)
  print(f"{'representation':>14} {'dim':>6} {'train':>7} {'test':>7} "
        f"{'sec':>6}")
  for r in rows:
    print(f"{r['representation']:>14} {r['descriptor_dim']:>6} "
          f"{r['train_accuracy']:7.4f} {r['test_accuracy']:7.4f} "
          f"{r['seconds']:6.1f}")
  print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
