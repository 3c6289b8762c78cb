"""Checkpoint files as the references write them, for the import tests:
DataParallel `.pth.tar`, fast-MPN-COV `Newmodel` names, MindSpore model-zoo
names and BN epsilons. The torch models and ops themselves are the shared
`torch_reference` package (re-exported here for the `tref` fixture).
"""

import re

import numpy as np
import torch
from torch import nn

from torch_reference.ops import triu  # noqa: F401
from torch_reference.resnet import build, logits, randomize  # noqa: F401


def save_data_parallel(model: nn.Module, path) -> None:
  """A `.pth.tar` as the references' main.py save it from nn.DataParallel:
  'module.'-prefixed weights plus epoch, arch, best_prec1, optimizer."""
  state = {f"module.{k}": v for k, v in model.state_dict().items()}
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
  torch.save({"epoch": 7, "arch": "resnet_gcp", "state_dict": state,
              "best_prec1": torch.tensor(71.3),
              "optimizer": optimizer.state_dict()}, path)


def fmpn_newmodel_names(state: dict, from_scratch: bool) -> dict:
  """fast-MPN-COV `Newmodel` names with `model.features` in DataParallel:
  `features.module.<i>.`, reduction block in `features.8/9` (fine-tuned
  from a pretrained mpncovresnet) or `representation.conv_dr_block.0/1`
  (trained from scratch), `classifier.`."""
  index = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6,
           "layer4": 7, "layer_reduce": 8, "layer_reduce_bn": 9}
  out = {}
  for name, value in state.items():
    head, rest = name.split(".", 1)
    if head == "fc":
      name = f"classifier.{rest}"
    elif from_scratch and head in ("layer_reduce", "layer_reduce_bn"):
      name = f"representation.conv_dr_block.{index[head] - 8}.{rest}"
    else:
      name = f"features.module.{index[head]}.{rest}"
    out[name] = value
  return out


def mindspore_names(state: dict, rng: np.random.Generator) -> dict:
  """A MindSpore model-zoo style checkpoint of the same weights.

  BN gamma/beta/moving_mean/moving_variance, `down_sample_layer`, BasicBlock
  BNs `bn1d`/`bn2d`, classifier `end_point`, optimizer entries (`moments.*`
  of every trainable weight, `learning_rate`, `global_step`, `momentum`),
  no `num_batches_tracked`. The classifier already has MindSpore's outputs
  (build the torch model with 1001 classes).
  """
  bn_modules = {n.removesuffix(".running_mean") for n in state
                if n.endswith(".running_mean")}
  basic = not any(".conv3." in n for n in state)
  leaf_names = {"weight": "gamma", "bias": "beta",
                "running_mean": "moving_mean",
                "running_var": "moving_variance"}
  out, moments = {}, {}
  for name, value in state.items():
    value = np.asarray(value)
    module, leaf = name.rsplit(".", 1)
    if leaf == "num_batches_tracked":
      continue
    ms_leaf = leaf_names[leaf] if module in bn_modules else leaf
    ms_module = module.replace(".downsample.", ".down_sample_layer.")
    if basic:
      ms_module = re.sub(r"^(layer\d+\.\d+)\.bn(\d)$", r"\1.bn\2d", ms_module)
    ms_module = re.sub(r"^fc$", "end_point", ms_module)
    ms_name = f"{ms_module}.{ms_leaf}"
    out[ms_name] = value
    if not leaf.startswith("running"):
      moments[f"moments.{ms_name}"] = rng.normal(
          size=value.shape).astype(np.float32)
  out.update(moments)
  out["learning_rate"] = np.array(0.1, np.float32)
  out["global_step"] = np.array([500400], np.int32)
  out["momentum"] = np.array(0.9, np.float32)
  return out


def mindspore_bn_eps(name: str) -> float:
  """BN epsilons of a MindSpore model-zoo BasicBlock ResNet (res_base):
  1e-5 for the stem and shortcut BNs, 1e-4 elsewhere."""
  return 1e-5 if name == "bn1" or name.endswith("downsample.1") else 1e-4
