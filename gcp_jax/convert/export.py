"""Export gcp-jax ResNet variables to a PyTorch state_dict in fast-MPN-COV
naming, so JAX-trained models go back to the reference code.

Synopsis:
  state = export_state_dict(variables)          # {name: numpy array}
  save_pytorch_checkpoint(variables, "model.pth")
  # in PyTorch:  model = MPNCOVResNet(...)   (or ResNet_MPNCOV / ResNet_ACD)
  #              model.load_state_dict(torch.load("model.pth"))

Names are those of `MPNCOVResNet` (`conv1`, `bn1`, `layer{i}.{j}.*`,
`downsample.{0,1}`, `layer_reduce`, `layer_reduce_bn`, `fc`; DropCov's ECA
weight as `eca_layer.conv.weight`), layouts OIHW / (out, in) / (1, 1, k),
and every BatchNorm gets a `num_batches_tracked` counter (0), so
`load_state_dict(strict=True)` accepts the file. Importing the file back
(`load_pretrained`) reproduces the variables bit for bit.
"""

import os
from typing import Any

import jax
import numpy as np

from gcp_jax.convert import layout
from gcp_jax.convert import torch_files
from gcp_jax.convert.errors import WeightMappingError


def export_state_dict(variables: Any) -> dict[str, np.ndarray]:
  """gcp-jax variables -> {fast-MPN-COV name: numpy array}.

  Args:
    variables: {'params': ..., 'batch_stats': ...} of a ResNet GAP / GCP /
      DropCov model (jax or numpy arrays).

  Returns:
    The state_dict, in the order of the variables' tree, with a
    `<bn>.num_batches_tracked` int64 scalar after each BatchNorm's
    `running_var`.

  Raises:
    WeightMappingError: a variable has no reference name (e.g. a ViT), or
      the variables are DropCov's transformer, whose names layout.py knows
      for import only (its head's FC shares the ResNet's path).
  """
  state, unknown = {}, []
  for key_path, leaf in jax.tree_util.tree_leaves_with_path(variables):
    path = "/".join(str(getattr(k, "key", k)) for k in key_path)
    target = layout.canonical_name(path)
    if path.startswith("params/tokenizer/"):
      target = None
    if target is None:
      unknown.append(path)
      continue
    name, kind = target
    state[name] = np.array(kind.to_torch(np.asarray(leaf)), order="C")
    if name.endswith(".running_var"):
      counter = name.removesuffix(".running_var") + ".num_batches_tracked"
      state[counter] = np.zeros((), np.int64)
  if unknown:
    raise WeightMappingError(
        f"{len(unknown)} variables have no fast-MPN-COV name: "
        f"{', '.join(unknown[:10])}. Fix: export only ResNet GAP / GCP / "
        f"DropCov models (gcp_jax.models resnet*).")
  return state


def save_pytorch_checkpoint(variables: Any, path: str | os.PathLike) -> None:
  """Writes `export_state_dict(variables)` with `torch.save` (needs torch).

  The file is a plain state_dict: `torch.load(path, weights_only=True)`
  then `load_state_dict` of the reference model.
  """
  torch_files.save_torch_state_dict(export_state_dict(variables), path)
