"""Result dataclasses <-> JSON / .npz files, written atomically.

Every analysis returns a plain dataclass whose fields are numbers, strings,
None, JSON-able dicts, numpy arrays or tuples of numpy arrays. `save` picks
the format from the suffix:

  .json   one JSON object; arrays become (nested) lists.
  .npz    array fields stored as arrays, all other fields as one JSON string
          under the key `__fields__`.

`load(cls, path)` rebuilds the dataclass, turning the fields annotated
`np.ndarray` (or `tuple[np.ndarray, ...]`) back into arrays. Files are
written to a temporary name in the same directory and renamed into place, so
a crash never leaves a half-written file behind.

Synopsis:
  save(result, "probe.json");  result = load(GradientProbeResult, "probe.json")
"""

import dataclasses
import io
import json
import os
import tempfile
import typing
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
_FIELDS_KEY = "__fields__"


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` via a temporary file and `os.replace`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write_json(path: str, data: Any) -> None:
  """`data` as indented JSON, written atomically (`atomic_write_bytes`)."""
  atomic_write_bytes(path, json.dumps(data, indent=1).encode())


def atomic_write_text(path: str, text: str) -> None:
  """`text` plus a final newline, written atomically."""
  atomic_write_bytes(path, (text + "\n").encode())


def _jsonable(value: Any) -> Any:
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, (tuple, list)):
    return [_jsonable(v) for v in value]
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  return value


def _is_array_type(hint: Any) -> bool:
  return hint is np.ndarray


def _is_array_tuple_type(hint: Any) -> bool:
  return (typing.get_origin(hint) is tuple
          and typing.get_args(hint)[:1] == (np.ndarray,))


def _restore(cls: type, raw: dict[str, Any]) -> Any:
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for field in dataclasses.fields(cls):
    value, hint = raw[field.name], hints[field.name]
    if _is_array_type(hint):
      value = np.asarray(value)
    elif _is_array_tuple_type(hint):
      value = tuple(np.asarray(v) for v in value)
    kwargs[field.name] = value
  return cls(**kwargs)


def to_dict(result: Any) -> dict[str, Any]:
  """A dataclass -> a JSON-able dict (arrays as lists)."""
  return {f.name: _jsonable(getattr(result, f.name))
          for f in dataclasses.fields(result)}


def from_dict(cls: type[T], raw: dict[str, Any]) -> T:
  """Inverse of `to_dict`."""
  return _restore(cls, raw)


def save(result: Any, path: str) -> None:
  """Writes a result dataclass to `path` (.json or .npz), atomically."""
  if path.endswith(".json"):
    atomic_write_json(path, to_dict(result))
  elif path.endswith(".npz"):
    arrays, others = {}, {}
    for f in dataclasses.fields(result):
      value = getattr(result, f.name)
      if isinstance(value, np.ndarray):
        arrays[f.name] = value
      else:
        others[f.name] = _jsonable(value)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{_FIELDS_KEY: np.array(json.dumps(others))})
    atomic_write_bytes(path, buffer.getvalue())
  else:
    raise ValueError(f"Unknown result format for {path!r}; use .json or .npz.")


def load(cls: type[T], path: str) -> T:
  """Reads a result dataclass written by `save`."""
  if path.endswith(".json"):
    with open(path) as f:
      return _restore(cls, json.load(f))
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as data:
      raw = json.loads(str(data[_FIELDS_KEY]))
      raw.update({k: data[k] for k in data.files if k != _FIELDS_KEY})
    return _restore(cls, raw)
  raise ValueError(f"Unknown result format for {path!r}; use .json or .npz.")
