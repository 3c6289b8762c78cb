"""Bring the names of each reference code base to one canonical naming.

The canonical naming is that of fast-MPN-COV's `MPNCOVResNet`
(`src/network/mpncovresnet.py`), which GCP_Optimization (`ResNet_MPNCOV`)
and DropCov (`ResNet_ACD`) share, on top of torchvision's ResNet:

  conv1.weight, bn1.{weight,bias,running_mean,running_var}
  layer{i}.{j}.conv{k}.weight, layer{i}.{j}.bn{k}.*
  layer{i}.{j}.downsample.0.weight, layer{i}.{j}.downsample.1.*
  layer_reduce.weight, layer_reduce_bn.*      (GCP / DropCov reduction block)
  eca_layer.conv.weight                       (DropCov ECA Conv1d, (1, 1, 3))
  fc.weight, fc.bias

Other spellings brought to it here:

* `module.` path components from `nn.DataParallel`, anywhere in the name
  (fast-MPN-COV's `main.py` wraps only `model.features`, giving
  `features.module.0.weight`).
* fast-MPN-COV `Newmodel` (`model_init.py` + `src/network/base.py`, the
  checkpoints its `main.py` saves): `features.{0,1,4..7}` = conv1, bn1,
  layer1..4; the reduction block is `features.{8,9}` when fine-tuning a
  pretrained `mpncovresnet` or `representation.conv_dr_block.{0,1}` when
  training from scratch; `classifier` = fc.
* fast-MPN-COV VGG-16-BN (`mpncovvgg16_bn`, and `Newmodel` around it or
  around `vgg16_bn`): torchvision's `features.{k}` indices (conv k, BN
  k + 1, ReLU k + 2, a max-pool one index) become `block{i}.conv{j}` and
  `block{i}.bn{j}` (conv biases kept), `representation.conv_dr_block.{0,1}`
  the reduction block, and the classifier's Linears `classifier.{0,3,6}`
  `hidden0`, `hidden1`, `fc` (one Linear, `classifier.*`: `fc`). A file is
  read as VGG when its `features` indices are not those of a ResNet
  `Newmodel` (0, 1, 4..9).
* DropCov's transformer (`Deit_drop_*`) keeps its own names (layout.py);
  `classifier.` becomes `fc.` only in `classifier.weight/bias` (fast-MPN-COV
  `Newmodel`), so its `classifier.cls_fc.*` etc. pass unchanged.
* GCP_Optimization MobileNetV2 (`MobileNetV2*.py`, recognised by its
  `features.{k}.conv.*` blocks) and ShuffleNetV2 (`ShuffleNetV2*.py`) keep
  their own names (layout.py), so they pass unchanged: MobileNetV2's
  `features.*` is not read as VGG's or `Newmodel`'s.
* MindSpore model-zoo ResNet (`official/cv/ResNet/src/resnet.py`, which the
  TPAMI MindSpore code forks): BN `gamma/beta/moving_mean/moving_variance`,
  `down_sample_layer.{0,1}`, BasicBlock BNs `bn1d/bn2d`, classifier
  `end_point` (the fork's `fc`, if so named, passes unchanged), optimizer
  state (`moments.*`, `learning_rate`, `global_step`, ...) skipped.
  The fork's own source (reduction block names) could not be read; it is
  assumed to keep fast-MPN-COV's `layer_reduce`/`layer_reduce_bn`. Anything
  else can be renamed by the caller (`load_pretrained(rename=...)`).
* The seed's SE-ResNet-50 (`src/resnet.py` `se_resnet50`, recognised by
  its `conv1_0` stem; names as `torch_reference/se_resnet.py`): after the
  model-zoo renames, the stem's last BN `bn1` -> `bn1_2` (its convs
  `conv1_{0,1,2}` and BNs `bn1_{0,1}` pass unchanged), a strided block's
  `e2.0` / `e2.1` -> `conv2` / `bn2`, and its shortcut [max-pool, conv, BN]
  `down_sample_layer.{1,2}` -> `downsample.{0,1}`; `se_dense_{0,1}` and
  the classifier `fc` pass unchanged.
"""

import re
from typing import Mapping, Sequence

import numpy as np

from gcp_jax.convert.errors import CheckpointFormatError, ConvertOptionError
from gcp_jax.models import dropcov_vit

# gcp-jax's BatchNorm epsilon (gcp_jax.models.layers.batch_norm), PyTorch's
# default.
GCP_JAX_BN_EPSILON = 1e-5
# MindSpore model-zoo ResNet: `_bn(c)` uses eps 1e-4; `_bn(c, res_base=True)`
# (stem and shortcut BNs of ResNet-18/34 only) uses 1e-5.
MINDSPORE_BN_EPSILON = 1e-4
MINDSPORE_RES_BASE_BN_EPSILON = 1e-5

FMPN_FEATURES = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2",
                 "6": "layer3", "7": "layer4", "8": "layer_reduce",
                 "9": "layer_reduce_bn"}
FMPN_RENAMES = ((r"^representation\.conv_dr_block\.0\.", "layer_reduce."),
                (r"^representation\.conv_dr_block\.1\.", "layer_reduce_bn."),
                (r"^classifier\.(weight|bias)$", r"fc.\1"))



def _vgg_features(block_sizes: Sequence[int]) -> dict[str, str]:
  """torchvision `make_layers(cfg, batch_norm=True)` index -> canonical
  module, for blocks of `block_sizes` convolutions."""
  names, k = {}, 0
  for i, size in enumerate(block_sizes, start=1):
    for j in range(1, size + 1):
      names[str(k)] = f"block{i}.conv{j}"
      names[str(k + 1)] = f"block{i}.bn{j}"
      k += 3
    k += 1                                   # the block's max-pool
  return names


VGG16_FEATURES = _vgg_features((2, 2, 3, 3, 3))
# VGG's classifier: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear.
VGG_CLASSIFIER = {"0": "hidden0", "3": "hidden1", "6": "fc"}

MINDSPORE_RENAMES = (
    (r"\.gamma$", ".weight"), (r"\.beta$", ".bias"),
    (r"\.moving_mean$", ".running_mean"),
    (r"\.moving_variance$", ".running_var"),
    (r"\.down_sample_layer\.", ".downsample."),
    (r"\.bn(\d)d\.", r".bn\1."),
    (r"^end_point\.", "fc."))
# Leading wrapper cells of MindSpore training graphs.
MINDSPORE_PREFIXES = ("network.", "_backbone.")
# Optimizer / training-loop state in MindSpore checkpoints (not weights).
MINDSPORE_OPTIMIZER = re.compile(
    r"^(moments|accum|stat|adam_m|adam_v|moment1|moment2|velocity)\."
    r"|^(learning_rate|global_step|momentum|scale_sense|loss_scale|"
    r"current_iterator_step|last_overflow_iterator_step|epoch_num|step_num|"
    r"beta1_power|beta2_power)$")

IGNORED_SUFFIX = ".num_batches_tracked"

Named = list[tuple[str, str, np.ndarray]]   # (canonical, name in file, array)


def apply_renames(names: Sequence[str],
                  renames: Sequence[tuple[str, str]]) -> dict[str, str]:
  """{name: renamed} after each (regex, replacement) `re.sub` in turn."""
  out = {}
  for name in names:
    new = name
    for pattern, repl in renames:
      new = re.sub(pattern, repl, new)
    out[name] = new
  return out


def strip_data_parallel(name: str) -> str:
  """Drops every `module` path component (`nn.DataParallel` wrappers)."""
  return ".".join(p for p in name.split(".") if p != "module")


def _indexed(name: str, prefix: str, table: Mapping[str, str]) -> str | None:
  """`prefix.{k}.rest` -> `table[k].rest`; None if the name is not so."""
  match = re.match(rf"^{prefix}\.(\d+)\.(.*)$", name)
  if match and match.group(1) in table:
    return f"{table[match.group(1)]}.{match.group(2)}"
  return None


def _fmpn_renamed(name: str) -> str:
  for pattern, repl in FMPN_RENAMES:
    name = re.sub(pattern, repl, name)
  return name


def _fmpn_newmodel(name: str) -> str:
  """fast-MPN-COV `Newmodel` names -> canonical (others unchanged)."""
  return _indexed(name, "features", FMPN_FEATURES) or _fmpn_renamed(name)


def _fmpn_vgg(name: str) -> str:
  """fast-MPN-COV VGG-16-BN names -> canonical (others unchanged)."""
  return (_indexed(name, "features", VGG16_FEATURES)
          or _indexed(name, "classifier", VGG_CLASSIFIER)
          or _fmpn_renamed(name))


def _is_vgg(names: Sequence[str]) -> bool:
  """`features.{k}` indices that a ResNet `Newmodel` does not have."""
  indices = {m.group(1) for m in (re.match(r"^features\.(\d+)\.", n)
                                  for n in names) if m}
  return bool(indices - set(FMPN_FEATURES))


def _is_mobilenet(names: Sequence[str]) -> bool:
  """GCP_Optimization's MobileNetV2 (`features.{k}.conv.*` blocks), whose
  names are canonical as they are (layout.py)."""
  return any(re.match(r"^features\.\d+\.conv\.", n) for n in names)


def _keep(name: str) -> str:
  return name


def _check_sinusoid(name: str, array: np.ndarray) -> None:
  table = dropcov_vit.sinusoid_table(array.shape[-2], array.shape[-1])
  if array.size != table.size or not np.allclose(
      np.reshape(array, table.shape), table, atol=1e-6):
    raise CheckpointFormatError(
        f"{name} {tuple(array.shape)} is not the fixed sinusoid position "
        f"table of DropCov's transformer; gcp-jax imports only that "
        f"network's position embedding (it is computed, not loaded).")


def canonical_from_torch(state: Mapping[str, np.ndarray]
                         ) -> tuple[Named, list[str]]:
  """PyTorch checkpoint names -> canonical names.

  Returns:
    ([(canonical, name in file, array)], [skipped names in file]); the
    skipped ones are BN `num_batches_tracked` counters and the fixed
    sinusoid `pos_embed` of DropCov's transformer, which gcp-jax computes.

  Raises:
    CheckpointFormatError: a `pos_embed` that is not that sinusoid table
      (a learned one has no place in gcp-jax's DropCovViT).
  """
  out, skipped = [], []
  names = {name: strip_data_parallel(name) for name in state}
  stripped = list(names.values())
  rename = (_keep if _is_mobilenet(stripped)
            else _fmpn_vgg if _is_vgg(stripped) else _fmpn_newmodel)
  for name, array in state.items():
    if name.endswith(IGNORED_SUFFIX):
      skipped.append(name)
      continue
    if names[name] == "pos_embed":
      _check_sinusoid(name, array)
      skipped.append(name)
      continue
    out.append((rename(names[name]), name, array))
  return out, skipped


# What to do with the 1001st output of a MindSpore ImageNet classifier.
EXTRA_CLASS = ("last", "first", "keep")


def check_extra_class(extra_class: str) -> None:
  """Raises ConvertOptionError unless `extra_class` is one of
  `EXTRA_CLASS`."""
  if extra_class not in EXTRA_CLASS:
    raise ConvertOptionError(
        f"extra_class (config: init_from_extra_class) must be one of "
        f"{EXTRA_CLASS}, got {extra_class!r}.")


def canonical_from_mindspore(state: Mapping[str, np.ndarray],
                             extra_class: str = "last"
                             ) -> tuple[Named, list[str]]:
  """MindSpore checkpoint names -> canonical names.

  Args:
    state: {tag: array} of the `.ckpt`.
    extra_class: the MindSpore ImageNet heads have 1001 outputs for 1000
      classes. "last" drops output 1000: the seed's training (and MindSpore's
      model zoo ResNets) read ImageNet as an image folder with labels
      0..999, so output i is class i and output 1000 is never a target.
      "first" drops output 0 (a TF-slim-style background class, labels
      1..1000); "keep" keeps all 1001.

  Returns:
    ([(canonical, tag, array)], [skipped tags]): optimizer state, strings
    and non-float entries are skipped.
  """
  out, skipped = [], []
  for tag, array in state.items():
    name = tag
    for prefix in MINDSPORE_PREFIXES:
      name = name.removeprefix(prefix)
    if (MINDSPORE_OPTIMIZER.search(name)
        or not np.issubdtype(array.dtype, np.floating)):
      skipped.append(tag)
      continue
    for pattern, repl in MINDSPORE_RENAMES:
      name = re.sub(pattern, repl, name)
    if extra_class != "keep" and name in ("fc.weight", "fc.bias"):
      if extra_class == "last":
        array = array[:-1]
        skipped.append(f"{tag}[-1] (unused extra class)")
      else:
        array = array[1:]
        skipped.append(f"{tag}[0] (background class)")
    out.append((name, tag, array))
  return _se_resnet_renamed(out), skipped


def _se_resnet_renamed(named: Named) -> Named:
  """The seed's SE-ResNet (a `conv1_0` stem) after MINDSPORE_RENAMES: the
  stem's last BN `bn1` -> `bn1_2`; a strided block's `e2.{0,1}` (3x3 conv,
  BN) -> `conv2`, `bn2`, and its shortcut [max-pool, conv, BN]
  `downsample.{1,2}` -> `downsample.{0,1}`."""
  if not any(c.startswith("conv1_0.") for c, _, _ in named):
    return named
  strided = {c.split(".e2.")[0] for c, _, _ in named if ".e2." in c}
  out = []
  for canonical, tag, array in named:
    canonical = re.sub(r"^bn1\.", "bn1_2.", canonical)
    canonical = re.sub(r"\.e2\.([01])\.",
                       lambda m: (".conv2.", ".bn2.")[int(m.group(1))],
                       canonical)
    block = canonical.split(".downsample.")[0]
    if ".downsample." in canonical and block in strided:
      canonical = re.sub(r"\.downsample\.([12])\.",
                         lambda m: f".downsample.{int(m.group(1)) - 1}.",
                         canonical)
    out.append((canonical, tag, array))
  return out


def mindspore_bn_epsilons(canonical: Sequence[str]) -> dict[str, float]:
  """{canonical BN module: epsilon} following the model-zoo ResNet.

  BasicBlock networks (ResNet-18/34, built with `res_base=True`; they have
  no `conv3`) use 1e-5 for the stem BN and the shortcut BNs and 1e-4 for
  the BNs inside the blocks; Bottleneck networks use 1e-4 everywhere. The
  reduction BN of the TPAMI fork uses 1e-4 (docs/method.md §2.4).
  """
  res_base = not any(".conv3." in n for n in canonical)
  eps = {}
  for name in canonical:
    if not name.endswith(".running_var"):
      continue
    module = name.removesuffix(".running_var")
    base_bn = module == "bn1" or module.endswith(".downsample.1")
    eps[module] = (MINDSPORE_RES_BASE_BN_EPSILON if res_base and base_bn
                   else MINDSPORE_BN_EPSILON)
  return eps
