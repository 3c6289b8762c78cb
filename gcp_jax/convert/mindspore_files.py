"""Read and write MindSpore `.ckpt` files without MindSpore.

A `.ckpt` is protobuf (MindSpore's public `checkpoint.proto`, proto2):

    message Checkpoint {
      message Value { required string tag = 1;
                      required TensorProto tensor = 2; }
      repeated Value value = 1;
    }
    message TensorProto {
      repeated int64 dims = 1;           // shape; [0] for a scalar
      required string tensor_type = 2;   // "Float32", "Float16", "Int32", ...
      required bytes tensor_content = 3; // raw little-endian C-order data
    }

MindSpore writes one serialised `Checkpoint` per tensor and appends them;
protobuf merges concatenated messages by appending repeated fields, so the
whole file parses as one `Checkpoint`. Tensors above 512 MB are written as
several consecutive values with the same tag, each holding one
`np.array_split` piece along axis 0 and the full dims; the reader
concatenates consecutive same-tag pieces before reshaping.

The schema is built in code (`descriptor_pb2` -> a private
`DescriptorPool` -> `message_factory.GetMessageClass`), so no generated
`_pb2.py` file or MindSpore install is needed; the private pool keeps the
generic message names (`TensorProto`) away from other protobuf users in the
process. Encrypted checkpoints (MindSpore `enc_key`) are not supported.
"""

import functools
import math
import os
from typing import Any, Mapping

import numpy as np
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message as pb_message
from google.protobuf import message_factory

from gcp_jax.convert.errors import CheckpointFormatError

PACKAGE = "gcp_jax.mindspore"
# MindSpore's tensor_type names -> numpy dtypes ("UInt8" in current
# MindSpore, "Uint8" in early releases; both are read).
NUMPY_DTYPES = {
    "Bool": np.bool_, "Int8": np.int8, "Int16": np.int16, "Int32": np.int32,
    "Int64": np.int64, "UInt8": np.uint8, "UInt16": np.uint16,
    "UInt32": np.uint32, "UInt64": np.uint64, "Uint8": np.uint8,
    "Uint16": np.uint16, "Uint32": np.uint32, "Uint64": np.uint64,
    "Float16": np.float16, "Float32": np.float32, "Float64": np.float64,
}
TYPE_NAMES = {np.dtype(v): k for k, v in NUMPY_DTYPES.items()
              if not k.startswith("Uint")}
# MindSpore's default slice size (serialization.SLICE_SIZE, in bytes).
SLICE_BYTES = 512 * 1024 * 1024


@functools.cache
def checkpoint_message_class() -> type[pb_message.Message]:
  """The protobuf class of `Checkpoint`, built from the schema above."""
  field = descriptor_pb2.FieldDescriptorProto
  proto = descriptor_pb2.FileDescriptorProto(
      name="gcp_jax/mindspore_checkpoint.proto", package=PACKAGE,
      syntax="proto2")
  tensor = proto.message_type.add(name="TensorProto")
  tensor.field.add(name="dims", number=1, label=field.LABEL_REPEATED,
                   type=field.TYPE_INT64)
  tensor.field.add(name="tensor_type", number=2, label=field.LABEL_REQUIRED,
                   type=field.TYPE_STRING)
  tensor.field.add(name="tensor_content", number=3,
                   label=field.LABEL_REQUIRED, type=field.TYPE_BYTES)
  checkpoint = proto.message_type.add(name="Checkpoint")
  value = checkpoint.nested_type.add(name="Value")
  value.field.add(name="tag", number=1, label=field.LABEL_REQUIRED,
                  type=field.TYPE_STRING)
  value.field.add(name="tensor", number=2, label=field.LABEL_REQUIRED,
                  type=field.TYPE_MESSAGE, type_name=f".{PACKAGE}.TensorProto")
  checkpoint.field.add(name="value", number=1, label=field.LABEL_REPEATED,
                       type=field.TYPE_MESSAGE,
                       type_name=f".{PACKAGE}.Checkpoint.Value")
  pool = descriptor_pool.DescriptorPool()
  pool.Add(proto)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName(f"{PACKAGE}.Checkpoint"))


def looks_like_mindspore(head: bytes) -> bool:
  """First byte 0x0A = field 1 (`value`), length-delimited."""
  return head.startswith(b"\x0a")


def _decode(tag: str, type_name: str, dims: list[int], content: bytes,
            path: str) -> np.ndarray:
  """One tensor from its (concatenated) content."""
  if type_name == "str":   # metadata strings MindSpore can append
    return np.array(content.decode("utf-8", "replace"))
  if type_name == "BFloat16":
    raw = np.frombuffer(content, np.uint16).astype(np.uint32) << 16
    flat = raw.view(np.float32)
  elif type_name in NUMPY_DTYPES:
    flat = np.frombuffer(content, NUMPY_DTYPES[type_name])
  else:
    raise CheckpointFormatError(
        f"{path}: tensor {tag!r} has type {type_name!r}, which this reader "
        f"does not know (known: {', '.join(sorted(NUMPY_DTYPES))}, BFloat16). "
        f"Fix: convert the checkpoint to float32 in MindSpore first.")
  shape = () if list(dims) == [0] and flat.size == 1 else tuple(dims)
  if math.prod(shape) != flat.size:
    raise CheckpointFormatError(
        f"{path}: tensor {tag!r} declares shape {tuple(dims)} but holds "
        f"{flat.size} {type_name} values; the file is corrupt. Fix: download "
        f"or copy it again.")
  return flat.reshape(shape).copy()


def read_mindspore_checkpoint(path: str | os.PathLike
                              ) -> dict[str, np.ndarray]:
  """Loads every tensor of a MindSpore `.ckpt`.

  Args:
    path: the `.ckpt` file.

  Returns:
    {tag: array} in file order, with MindSpore's names and layouts (conv
    weights (O, I, kh, kw), Dense weights (out, in)), optimizer entries
    (`moments.*`, `learning_rate`, ...) included. Scalars are 0-d arrays;
    `str` entries are 0-d string arrays.

  Raises:
    CheckpointFormatError: not protobuf, truncated, or inconsistent sizes.
  """
  path = os.fspath(path)
  with open(path, "rb") as f:
    data = f.read()
  checkpoint = checkpoint_message_class()()
  try:
    checkpoint.ParseFromString(data)
  except pb_message.DecodeError as e:
    raise CheckpointFormatError(
        f"{path} is not a readable MindSpore checkpoint: the protobuf data is "
        f"truncated or corrupt ({e}). Fix: download or copy it again; "
        f"encrypted .ckpt files must be decrypted in MindSpore first.") from e
  if not checkpoint.value:
    raise CheckpointFormatError(
        f"{path} parses as protobuf but holds no MindSpore tensors. Fix: pass "
        f"the .ckpt written by mindspore.save_checkpoint.")
  tensors: dict[str, np.ndarray] = {}
  pieces: list[bytes] = []
  values = checkpoint.value
  for i, value in enumerate(values):
    pieces.append(value.tensor.tensor_content)
    if i + 1 < len(values) and values[i + 1].tag == value.tag:
      continue
    tensors[value.tag] = _decode(value.tag, value.tensor.tensor_type,
                                 list(value.tensor.dims), b"".join(pieces),
                                 path)
    pieces = []
  return tensors


def write_mindspore_checkpoint(tensors: Mapping[str, Any],
                               path: str | os.PathLike, *,
                               slice_bytes: int = SLICE_BYTES) -> None:
  """Writes {tag: array} as a MindSpore `.ckpt` (the layout above).

  `mindspore.load_checkpoint` reads the result; tensors larger than
  `slice_bytes` are split along axis 0 into consecutive same-tag values as
  MindSpore does (smaller `slice_bytes` is for tests).

  Args:
    tensors: name -> array-like of a dtype in `TYPE_NAMES` (bool, int8..64,
      uint8..64, float16/32/64). 0-d arrays are written with dims [0].
    path: destination file (overwritten).
    slice_bytes: largest piece written as one value.
  """
  message_cls = checkpoint_message_class()
  with open(os.fspath(path), "wb") as f:
    for tag, array in tensors.items():
      array = np.asarray(array)   # tobytes() below is C order
      if array.dtype not in TYPE_NAMES:
        raise ValueError(f"Cannot write {tag!r} of dtype {array.dtype} to a "
                         f"MindSpore checkpoint; use one of "
                         f"{sorted(map(str, TYPE_NAMES))}.")
      count = max(1, math.ceil(array.nbytes / slice_bytes))
      parts = np.array_split(array, count) if array.ndim else [array]
      for part in parts:
        checkpoint = message_cls()
        value = checkpoint.value.add()
        value.tag = tag
        value.tensor.dims.extend(array.shape if array.ndim else [0])
        value.tensor.tensor_type = TYPE_NAMES[array.dtype]
        value.tensor.tensor_content = part.tobytes()
        f.write(checkpoint.SerializeToString())
