"""gcp-jax entry point.

  python main.py --config configs/X.py --workdir DIR [--config.key=value ...]
         [--mode=train|eval|export|summary|probe|robustness]
         [--init_from=PATH]
         [--init_from_ignore=REGEX,...]

`train` (default) trains and evaluates with automatic resume from the
workdir (or starts from `--init_from=PATH`, a published PyTorch / MindSpore
checkpoint); `eval` evaluates the workdir's latest checkpoint, or the
`--init_from` file; `export` writes the latest checkpoint as a PyTorch
state_dict in fast-MPN-COV naming (WORKDIR/pytorch_state_dict.pth);
`summary` prints parameters per module and forward FLOPs; `probe` runs the
second-order descriptor probe (configs/digits_probe.py); `robustness`
evaluates the workdir's checkpoint (or `--init_from`) on the ImageNet-C
corruptions (`--config.robustness.*`; WORKDIR/robustness/). Config keys
are locked: an unknown `--config.key` is an error. Several hosts: pass
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (or set
them in the environment as `jax.distributed.initialize` documents).

Kept short on purpose: the work is done by library functions that tests and
notebooks import.
"""

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from gcp_jax.errors import GcpJaxError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Path to an ml_collections config file.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and "
                    "results.")
flags.DEFINE_enum("mode", "train",
                  ["train", "eval", "summary", "probe", "export",
                   "robustness"],
                  "What to run.")
flags.DEFINE_string("init_from", None, "Shorthand for --config.init_from: a "
                    "PyTorch / MindSpore checkpoint to start from (train) or "
                    "to evaluate (eval).")
flags.DEFINE_list("init_from_ignore", None, "Shorthand for "
                  "--config.init_from_ignore: comma-separated regexes of "
                  "arrays to initialise afresh, e.g. 'head/fc/.*'.")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0 for multi-host runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
flags.DEFINE_integer("process_id", None, "Index of this process.")
flags.DEFINE_bool("malloc_keep_freed", True, "If JAX can only use the "
                  "CPU, make glibc keep freed memory for reuse "
                  "(gcp_jax.allocator): each step then reuses its "
                  "temporaries instead of page-faulting them in again. A "
                  "glibc.malloc.* setting in GLIBC_TUNABLES takes "
                  "precedence.")
flags.mark_flags_as_required(["config", "workdir"])


def _init_distributed() -> None:
  if FLAGS.coordinator_address is None and FLAGS.num_processes is None:
    return
  import jax
  jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                             FLAGS.process_id)


def _keep_freed_memory() -> None:
  """gcp_jax.allocator's settings where `gcp_jax.backend` wants them (a
  CPU-only JAX, and no malloc tunable of the user's)."""
  from gcp_jax import allocator, backend
  if not backend.keep_freed_memory_wanted():
    if allocator.cpu_only_jax():   # then GLIBC_TUNABLES chose malloc's setup
      logging.info("GLIBC_TUNABLES sets malloc; gcp_jax.allocator not used.")
    return
  if allocator.keep_freed_memory():
    logging.info("glibc keeps freed memory (gcp_jax.allocator).")
  else:
    logging.warning("glibc's malloc settings left alone: not glibc, or "
                    "other threads already run (gcp_jax.allocator).")


def _write_json(path: str, payload: dict) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(payload, f, indent=2)
  os.replace(path + ".tmp", path)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with one error line for an override of a config
  key that does not exist (ml_collections raises a bare AttributeError)."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:
    key = str(e.args[0] if e.args else e).split("\n")[0].strip("\"'")
    given = [a.split("=")[0] for a in argv if a.startswith("--config.")
             and key in a.split("=")[0].split(".")[1:]]
    sys.exit(f"error: {given[0] if given else key} is not a key of the "
             f"config: --config.KEY=VALUE changes a key the config file "
             f"sets; set a new key (e.g. an entry of "
             f"config.model.backbone_options) in the config file.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:   # progress lines, not library chatter
    logging.set_verbosity(logging.WARNING)
  if FLAGS.malloc_keep_freed:   # before anything starts a thread
    _keep_freed_memory()
  _init_distributed()
  import jax  # after flag parsing, so --help stays fast
  config, workdir = FLAGS.config, FLAGS.workdir
  if FLAGS.init_from is not None:
    config.init_from = FLAGS.init_from
  if FLAGS.init_from_ignore is not None:
    config.init_from_ignore = tuple(FLAGS.init_from_ignore)
  logging.info("JAX %s, process %d/%d, local devices: %s", jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_devices())
  os.makedirs(workdir, exist_ok=True)
  if FLAGS.mode == "probe":
    from gcp_jax.studies.descriptor_probe import format_results, run_probe
    results = run_probe(config)
    _write_json(os.path.join(workdir, "probe_results.json"),
                {"config": config.to_dict(),
                 "results": [r.__dict__ for r in results.values()]})
    print(format_results(results))
  elif FLAGS.mode == "summary":
    from gcp_jax.models.summary import format_summary, summarize
    from gcp_jax.train.loop import build_model
    model = build_model(config, config.num_classes or 1000)
    print(format_summary(summarize(model, config.data.image_size)))
  elif FLAGS.mode == "export":
    from gcp_jax.train.restore import export_pytorch
    print(f"Wrote {export_pytorch(config, workdir)}")
  elif FLAGS.mode == "eval":
    from gcp_jax.train.restore import evaluate
    metrics = evaluate(config, workdir)
    if jax.process_index() == 0:
      _write_json(os.path.join(workdir, "eval_results.json"), metrics)
    print(json.dumps(metrics))
  elif FLAGS.mode == "robustness":
    from gcp_jax.train import robustness
    if config.robustness.source == "imagenet_p":
      results = robustness.run_perturbations(config, workdir)
      summary = {k: results[k] for k in ("mean_fp", "mean_t5d")}
    else:
      results = robustness.run_robustness(config, workdir)
      summary = {k: results["summary"][k] for k in
                 ("clean_error", "mce", "relative_mce")}
    if jax.process_index() == 0:
      print(json.dumps(summary))
  else:
    from gcp_jax.train.loop import train_and_evaluate
    result = train_and_evaluate(config, workdir)
    if jax.process_index() == 0:
      _write_json(os.path.join(workdir, "final_metrics.json"),
                  {"eval": result.eval_metrics,
                   "train": result.history[-1] if result.history else {}})


if __name__ == "__main__":
  try:
    app.run(main, flags_parser=_parse_flags)
  except GcpJaxError as e:  # one clear message for user errors
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
