"""Orbax checkpoints of the training state: latest-N for resuming, plus the
best by eval top-1.

  WORKDIR/checkpoints/<step>/   latest `keep` checkpoints (resume from here)
  WORKDIR/best/<step>/          the checkpoint with the highest eval top-1

Each checkpoint holds the `TrainState` arrays (`state`) and JSON metadata
(`meta`: steps per epoch, model name, eval metrics). Writes are atomic
(orbax writes to a temporary directory and renames), so a run killed at any
moment leaves the previous checkpoints intact. Restoring a checkpoint of
another architecture raises `CheckpointMismatchError` listing the missing,
unexpected and shape-mismatched arrays.

Synopsis:
  ckpt = Checkpoints(workdir, keep=3)
  ckpt.save(step, state, meta, eval_top1=None)
  if ckpt.latest_step() is not None:
    meta = ckpt.latest_meta()            # the metadata alone, no arrays
    state, meta = ckpt.restore_latest(abstract_state)
  ckpt.close()
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from gcp_jax.errors import GcpJaxError

PyTree = Any


class CheckpointMismatchError(GcpJaxError, ValueError):
  """A checkpoint whose arrays do not fit the model being restored."""


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _shapes(tree: PyTree) -> dict[str, tuple[int, ...]]:
  """'/'-joined leaf paths -> shapes, for live states (dataclass fields,
  namedtuples) and orbax metadata trees (dicts, lists) alike."""
  tree = getattr(tree, "tree", tree)
  return {"/".join(_key_name(k) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def compare_structures(expected: dict[str, tuple[int, ...]],
                       found: dict[str, tuple[int, ...]],
                       what: str) -> None:
  """Raises CheckpointMismatchError naming every difference."""
  missing = sorted(set(expected) - set(found))
  unexpected = sorted(set(found) - set(expected))
  wrong = sorted(k for k in set(expected) & set(found)
                 if tuple(expected[k]) != tuple(found[k]))
  if not (missing or unexpected or wrong):
    return

  def listing(title, keys, fmt):
    shown = [fmt(k) for k in keys[:20]]
    more = f" ... and {len(keys) - 20} more" if len(keys) > 20 else ""
    return f"\n  {title} ({len(keys)}): " + ", ".join(shown) + more if keys \
        else ""
  raise CheckpointMismatchError(
      f"{what} does not match the model being built (another architecture, "
      f"head, reduction dimension d or number of classes?)."
      + listing("missing in checkpoint", missing, str)
      + listing("unexpected in checkpoint", unexpected, str)
      + listing("shape mismatch (checkpoint vs model)", wrong,
                lambda k: f"{k} {found[k]} vs {expected[k]}")
      + "\n  Fix: use the config the checkpoint was trained with, or a new "
        "--workdir.")


def has_checkpoint(workdir: str) -> bool:
  """True if WORKDIR/checkpoints holds a step folder (orbax renames a
  finished save to its step number). Creates nothing, unlike
  `Checkpoints`."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  return os.path.isdir(ckpt_dir) and any(
      name.isdigit() for name in os.listdir(ckpt_dir))


def _handlers():
  return {"state": ocp.StandardCheckpointHandler(),
          "meta": ocp.JsonCheckpointHandler()}


class Checkpoints:
  """Latest-N and best-by-top-1 checkpoint managers for one workdir."""

  def __init__(self, workdir: str, keep: int = 3):
    # Several processes: synchronous saves, so that no process can leave
    # train_and_evaluate while another still finalises a checkpoint.
    asynchronous = jax.process_count() == 1
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True,
        enable_async_checkpointing=asynchronous)
    self._latest = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=options, item_handlers=_handlers())
    best_options = ocp.CheckpointManagerOptions(
        max_to_keep=1, best_fn=lambda m: m["top1"], best_mode="max",
        keep_checkpoints_without_metrics=False, create=True,
        enable_async_checkpointing=asynchronous)
    self._best = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "best"),
        options=best_options, item_handlers=_handlers())

  def latest_step(self) -> int | None:
    return self._latest.latest_step()

  def save(self, step: int, state: PyTree, meta: dict[str, Any],
           eval_top1: float | None = None) -> None:
    """Saves `state` at `step`; also as best if `eval_top1` beats it.

    The (replicated) arrays are fetched to host numpy first: orbax saving
    device arrays slices every array per replica with eager JAX ops, which
    makes even a tiny model's save slow (measurements: benchmarks/RESULTS.md,
    "Numbers from library and test docstrings"). Restoring
    into an abstract state with shardings gives device arrays again.
    """
    args = ocp.args.Composite(state=ocp.args.StandardSave(
                                  jax.device_get(state)),
                              meta=ocp.args.JsonSave(meta))
    self._latest.save(step, args=args, force=True)
    if eval_top1 is not None:
      self._best.save(step, args=args, metrics={"top1": float(eval_top1)},
                      force=True)

  def _restore(self, manager, step: int, abstract_state: PyTree, what: str
               ) -> tuple[PyTree, dict[str, Any]]:
    try:
      found = manager.item_metadata(step)["state"]
    except KeyError as e:   # e.g. a step folder emptied or copied in part
      raise CheckpointMismatchError(
          f"{manager.directory}/{step} is not a complete checkpoint (no "
          f"'state' item). Fix: move that folder out of the way to resume "
          f"from the checkpoint before it, or use a new --workdir.") from e
    compare_structures(_shapes(abstract_state), _shapes(found),
                       f"{what} {manager.directory}/{step}")
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"])

  def restore_latest(self, abstract_state: PyTree
                     ) -> tuple[PyTree, dict[str, Any]]:
    """The latest checkpoint, checked against `abstract_state` (a pytree of
    `jax.ShapeDtypeStruct` with shardings)."""
    return self._restore(self._latest, self._latest.latest_step(),
                         abstract_state, "Checkpoint")

  def latest_meta(self) -> dict[str, Any]:
    """The JSON metadata of the latest checkpoint (no arrays are read)."""
    step = self._latest.latest_step()
    restored = self._latest.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def restore_best(self, abstract_state: PyTree
                   ) -> tuple[PyTree, dict[str, Any]] | None:
    """The best-top-1 checkpoint, or None if there is none yet."""
    step = self._best.best_step()
    if step is None:
      return None
    return self._restore(self._best, step, abstract_state, "Best checkpoint")

  def close(self) -> None:
    """Waits for pending writes and releases the managers."""
    for manager in (self._latest, self._best):
      manager.wait_until_finished()
      manager.close()

