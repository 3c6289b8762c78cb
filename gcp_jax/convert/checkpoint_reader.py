"""Read a PyTorch or MindSpore checkpoint file and name its arrays
canonically, without a model: `read_checkpoint(path) -> CheckpointFile`.

The format is detected from the file's first bytes (`detect_format`), the
arrays are read (`torch_files`, `mindspore_files`), renamed to the one
canonical naming (`naming`), the MindSpore 1001-way classifier is trimmed or
kept (`extra_class`), and the BatchNorm epsilon each array was trained with
is recorded. `gcp_jax.convert.loader.fit_checkpoint` then fits the result
to a model. Reading first lets a caller report an unreadable file before
building anything costly.
"""

import dataclasses
import os
from typing import Sequence

from gcp_jax.convert import mindspore_files
from gcp_jax.convert import naming
from gcp_jax.convert import torch_files
from gcp_jax.convert.errors import CheckpointFormatError

FORMATS = ("auto", "pytorch", "mindspore")


def _first_bytes(path: str) -> bytes:
  """The file's first 16 bytes; CheckpointFormatError if absent or empty."""
  if not os.path.isfile(path):
    raise CheckpointFormatError(f"{path}: no such file. Fix: check the path "
                                f"of the checkpoint.")
  with open(path, "rb") as f:
    head = f.read(16)
  if not head:
    raise CheckpointFormatError(f"{path} is empty. Fix: download or copy the "
                                f"checkpoint again.")
  return head


def detect_format(path: str | os.PathLike) -> str:
  """'pytorch' or 'mindspore' from the file's first bytes.

  Raises:
    CheckpointFormatError: missing, empty, or in any other format.
  """
  path = os.fspath(path)
  head = _first_bytes(path)
  if torch_files.is_torch_file(head, path):
    return "pytorch"
  if mindspore_files.looks_like_mindspore(head):
    return "mindspore"
  if head.startswith(b"PK\x03\x04"):
    seen = "a zip archive without data.pkl (e.g. a numpy .npz)"
  elif all(32 <= b < 127 or b in b"\t\r\n" for b in head):
    seen = "a text file"
  else:
    seen = f"unknown bytes {head[:8]!r}"
  raise CheckpointFormatError(
      f"{path}: unknown checkpoint format ({seen}). Readable formats: PyTorch "
      f"torch.save files (.pth, .pth.tar, .pt) and MindSpore .ckpt files. "
      f"Fix: pass one of those, or format='pytorch'/'mindspore' if the file "
      f"is one of them with an unusual start.")


def _read(path: str, fmt: str, rename: Sequence[tuple[str, str]],
          extra_class: str, bn_epsilon: float | None):
  """-> ([(canonical, file name, array)], skipped, {BN module: eps})."""
  if fmt == "pytorch":
    raw = torch_files.read_torch_checkpoint(path)
  else:
    raw = mindspore_files.read_mindspore_checkpoint(path)
  new_names = naming.apply_renames(list(raw), rename)
  raw = {new_names[k]: v for k, v in raw.items()}
  if fmt == "pytorch":
    named, skipped = naming.canonical_from_torch(raw)
    eps = {}
  else:
    named, skipped = naming.canonical_from_mindspore(raw, extra_class)
    eps = naming.mindspore_bn_epsilons([c for c, _, _ in named])
  if bn_epsilon is not None:
    eps = {c.removesuffix(".running_var"): bn_epsilon for c, _, _ in named
           if c.endswith(".running_var")}
  return named, skipped, eps


@dataclasses.dataclass(frozen=True)
class CheckpointFile:
  """A checkpoint file read and named canonically, not yet fitted to a
  model: what `read_checkpoint` returns and `fit_checkpoint` takes.

  Attributes:
    path: the file.
    format: 'pytorch' or 'mindspore'.
    named: [(canonical name, name in the file, numpy array)].
    skipped: file entries deliberately not imported.
    eps: {canonical BatchNorm module: the epsilon the file was trained with}.
    extra_class: which output of a MindSpore 1001-way classifier was
      dropped when read ("last", "first") or "keep".
  """
  path: str
  format: str
  named: naming.Named
  skipped: tuple[str, ...]
  eps: dict[str, float]
  extra_class: str


def read_checkpoint(path: str | os.PathLike, *,
                    extra_class: str = "last",
                    format: str = "auto",  # pylint: disable=redefined-builtin
                    bn_epsilon: float | None = None,
                    rename: Sequence[tuple[str, str]] = ()
                    ) -> CheckpointFile:
  """The first half of `load_pretrained` (same arguments): reads and names
  the file's arrays without a model, so that an unreadable file is reported
  before anything costly (e.g. the data pipeline) is built.

  Raises:
    CheckpointFormatError, MissingDependencyError: as `load_pretrained`.
  """
  path = os.fspath(path)
  if format not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, got {format!r}.")
  naming.check_extra_class(extra_class)
  if format == "auto":
    fmt = detect_format(path)
  else:
    _first_bytes(path)
    fmt = format
  named, skipped, eps = _read(path, fmt, rename, extra_class, bn_epsilon)
  return CheckpointFile(path, fmt, named, tuple(skipped), eps, extra_class)
