"""Read and write PyTorch checkpoints as flat {name: numpy array} dicts.

Accepted layouts (what the GCP reference repositories save):

  * a raw `state_dict` (`torch.save(model.state_dict(), ...)`, the released
    fast-MPN-COV `.pth` files);
  * a training checkpoint `{'state_dict': ..., 'epoch', 'arch', 'best_prec1',
    'optimizer', ...}` (`.pth.tar` of fast-MPN-COV, GCP_Optimization,
    DropCov) or `{'model': ...}`; only the weights are read.

Files are opened with `torch.load(..., weights_only=True)`: a checkpoint is
never allowed to run code. Numpy scalars (a `best_prec1` saved as
`np.float64`) are allow-listed; any other Python object makes the load fail
with instructions to re-save the weights in a trusted session.

PyTorch is imported lazily, so the rest of gcp-jax works without it.
"""

import os
import pickle
import zipfile
from typing import Any, Mapping

import numpy as np

from gcp_jax.convert.errors import CheckpointFormatError
from gcp_jax.convert.errors import MissingDependencyError

TORCH_PIN = "torch==2.13.0"
# Keys under which training scripts store the weights, in lookup order.
STATE_DICT_KEYS = ("state_dict", "model")


def import_torch() -> Any:
  """The `torch` module, or MissingDependencyError with the install line."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise MissingDependencyError(
        f"Reading or writing PyTorch checkpoints needs PyTorch, which is not "
        f"installed ({e}). Fix: pip install {TORCH_PIN} (CPU wheels: add "
        f"--index-url https://download.pytorch.org/whl/cpu).") from e
  return torch


def is_torch_file(head: bytes, path: str) -> bool:
  """True for a torch.save zip archive (an entry `<dir>/data.pkl`) or a
  legacy pickle (first byte 0x80, pickle protocol 2+).

  `head` is the first bytes of the file; `.npz` archives, which are zip
  files too, are rejected by the data.pkl test.
  """
  if head.startswith(b"\x80"):
    return True
  if not head.startswith(b"PK\x03\x04"):
    return False
  try:
    with zipfile.ZipFile(path) as archive:
      return any(n.endswith("/data.pkl") or n == "data.pkl"
                 for n in archive.namelist())
  except zipfile.BadZipFile:
    return True   # a zip that lost its end: let torch.load report it


def _numpy_safe_globals() -> list[Any]:
  """Globals needed to unpickle numpy scalars; they cannot execute code."""
  scalar = np._core.multiarray.scalar  # pylint: disable=protected-access
  dtype_classes = [getattr(np.dtypes, n) for n in dir(np.dtypes)
                   if n.endswith("DType")]
  return [scalar, np.dtype, *dtype_classes]


def _find_state_dict(obj: Any, path: str) -> Mapping[str, Any]:
  """The weights inside whatever `torch.load` returned."""
  if isinstance(obj, Mapping):
    for key in STATE_DICT_KEYS:
      if isinstance(obj.get(key), Mapping):
        return obj[key]
    if obj and all(hasattr(v, "shape") for v in obj.values()):
      return obj
    shown = ", ".join(repr(k) for k in list(obj)[:10])
  else:
    shown = type(obj).__name__
  raise CheckpointFormatError(
      f"{path}: no weights found. Expected a state_dict (name -> tensor) or a "
      f"dict with one under {' or '.join(map(repr, STATE_DICT_KEYS))}; the "
      f"file holds {shown}. Fix: re-save it with "
      f"torch.save(model.state_dict(), PATH).")


def _to_numpy(tensor: Any) -> np.ndarray:
  """CPU numpy copy; bfloat16 (no numpy dtype) is widened to float32."""
  tensor = tensor.detach().cpu()
  if str(tensor.dtype) == "torch.bfloat16":
    tensor = tensor.float()
  return tensor.numpy().copy()


def read_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Loads the weights of a PyTorch checkpoint.

  Args:
    path: a `.pth` / `.pth.tar` / `.pt` file (either layout above).

  Returns:
    {name: array} exactly as stored (e.g. `module.conv1.weight`, OIHW), in
    file order; entries that are not tensors are left out.

  Raises:
    MissingDependencyError: torch is not installed.
    CheckpointFormatError: truncated/corrupt file, Python objects that the
      safe loader refuses, or no weights inside.
  """
  torch = import_torch()
  path = os.fspath(path)
  try:
    with torch.serialization.safe_globals(_numpy_safe_globals()):
      obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    if "Weights only load failed" not in str(e):
      raise CheckpointFormatError(
          f"{path} is truncated or corrupt ({_first_line(e)}). Fix: "
          f"download or copy it again and compare its checksum.") from e
    raise CheckpointFormatError(
        f"{path} holds Python objects besides tensors, which the safe loader "
        f"(torch.load(weights_only=True)) refuses to unpickle: "
        f"{_refused_global(str(e))}. Fix: only if you trust the file, load it "
        f"in PyTorch with weights_only=False and re-save the weights alone: "
        f"torch.save(ckpt['state_dict'], 'weights.pth').") from e
  except (RuntimeError, EOFError, OSError, ValueError,
          zipfile.BadZipFile) as e:
    raise CheckpointFormatError(
        f"{path} is truncated or corrupt, or not a PyTorch checkpoint "
        f"({_first_line(e)}). Fix: download or copy it again and "
        f"compare its checksum.") from e
  state = _find_state_dict(obj, path)
  return {str(k): _to_numpy(v) for k, v in state.items()
          if isinstance(v, torch.Tensor)}


def _first_line(error: Exception, limit: int = 160) -> str:
  """The start of an exception's message, for one-line errors."""
  line = (str(error).splitlines() or [type(error).__name__])[0]
  return line if len(line) <= limit else line[:limit] + "..."


def _refused_global(message: str) -> str:
  """The 'Unsupported global: ...' line of torch's refusal, if present."""
  for line in message.splitlines():
    if "Unsupported global" in line:
      return line.strip().removeprefix("Error: ")
  return "see torch's message"


def save_torch_state_dict(state: Mapping[str, np.ndarray],
                          path: str | os.PathLike) -> None:
  """Writes {name: array} as a plain PyTorch state_dict (`torch.save`).

  The file loads with `torch.load(path, weights_only=True)` and then
  `model.load_state_dict(...)`.
  """
  torch = import_torch()
  # np.array(..., order="C") copies to C order and, unlike
  # np.ascontiguousarray, keeps 0-d arrays 0-d.
  tensors = {k: torch.from_numpy(np.array(v, order="C")) for k, v in
             state.items()}
  torch.save(tensors, os.fspath(path))
