"""Start training or evaluation from a published checkpoint (`init_from`).

`config.init_from` names a PyTorch (`.pth`, `.pth.tar`) or MindSpore
(`.ckpt`) file of the GCP papers' models (`gcp_jax.convert`). Training in a
workdir without a checkpoint of its own starts from those weights; arrays
matched by `config.init_from_ignore` (e.g. `("head/fc/.*",)` for a new set
of classes) come from the fresh initialisation instead, and the import
report says which. Once the workdir has a checkpoint, resuming takes
precedence and `init_from` is not read again. Evaluation
(`--mode=eval`) with `init_from` evaluates the file's weights as they are:
it never initialises a weight, so every array must come from the file.

The file is read (`read_init_from`) before the model and the data exist,
so an unreadable or missing file is reported first; fitting it to the model
comes after.

Synopsis:
  checkpoint = read_init_from(config)
  variables, report = pretrained_variables(checkpoint, config, model,
                                           image_size)
  variables = eval_variables(checkpoint, config, model, image_size)
"""

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from flax import linen as nn

from gcp_jax import backend
from gcp_jax.convert import (CheckpointFile, ImportReport, WeightMappingError,
                             fit_checkpoint, read_checkpoint)
from gcp_jax.models import layers, resnet

PyTree = dict


def read_init_from(config: ml_collections.ConfigDict) -> CheckpointFile:
  """The arrays of `config.init_from`, read and named, not yet fitted.

  Raises:
    gcp_jax.convert errors: missing, empty or unreadable file, or torch not
      installed for a PyTorch file.
  """
  return read_checkpoint(
      config.init_from, extra_class=config.init_from_extra_class)


def check_padding(checkpoint: CheckpointFile, model: nn.Module) -> None:
  """Raises WeightMappingError for a MindSpore Bottleneck ResNet file and a
  model that does not pad 'same'.

  The seed's MindSpore ResNet-50/101/152 pad their stride-2 convolutions
  and the stem's max-pool with `pad_mode='same'` (the odd pixel after):
  with PyTorch's symmetric padding the imported weights would compute
  another network (logits off by about 20 % of their scale). Its
  ResNet-18/34 pad symmetrically and need nothing.
  """
  if (checkpoint.format == "mindspore" and isinstance(model, resnet.ResNet)
      and model.block_cls is resnet.Bottleneck and model.padding != "same"):
    raise WeightMappingError(
        f"{checkpoint.path} is a MindSpore Bottleneck ResNet, which pads "
        f"stride-2 convolutions and the max-pool 'same' (the odd pixel "
        f"after); the model pads {model.padding!r}, so the weights would "
        f"compute another network. Fix: build the model with "
        f"padding='same' (config file: config.model.backbone_options."
        f"padding = 'same'; Python: create_model(..., padding='same')).")


def _import(checkpoint: CheckpointFile, config: ml_collections.ConfigDict,
            template: PyTree, model: nn.Module, image_size: int
            ) -> tuple[PyTree, ImportReport]:
  """Fits the file to `template`, each BN variance shifted from the file's
  epsilon to the model's (`layers.batch_norm_epsilons`)."""
  variables, report = fit_checkpoint(
      checkpoint, template, ignore=tuple(config.init_from_ignore),
      model_bn_epsilons=layers.batch_norm_epsilons(model, image_size))
  logging.warning("%s", report.summary())
  return variables, report


def pretrained_variables(checkpoint: CheckpointFile,
                         config: ml_collections.ConfigDict, model: nn.Module,
                         image_size: int) -> tuple[PyTree, ImportReport]:
  """The variables to train from: the file's arrays over a fresh
  initialisation (seed `config.seed`) of the ignored ones.

  Returns:
    ({'params', 'batch_stats'} as numpy / jax arrays, the import report).

  Raises:
    WeightMappingError: arrays that do not fit the model and are not
      ignored (the message lists them and the fix).
  """
  x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  fresh = backend.jit(model.init, static_argnums=2)(
      jax.random.key(config.seed), x, False)
  return _import(checkpoint, config, fresh, model, image_size)


def eval_variables(checkpoint: CheckpointFile,
                   config: ml_collections.ConfigDict, model: nn.Module,
                   image_size: int) -> PyTree:
  """The file's variables for evaluation; nothing is initialised (the
  template is abstract), so a missing array is an error, ignored or not."""
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  template = jax.eval_shape(
      lambda images: model.init(jax.random.key(0), images, False), x)
  variables, report = _import(checkpoint, config, template, model,
                              image_size)
  if report.not_loaded:
    shown = ", ".join(report.not_loaded[:10])
    raise WeightMappingError(
        f"--mode=eval evaluates the weights of {checkpoint.path} as they "
        f"are, but {len(report.not_loaded)} arrays of the model are not in "
        f"it ({shown}). Evaluating them at random values would be "
        f"meaningless: fine-tune first (--mode=train with init_from and "
        f"init_from_ignore), then evaluate that workdir.")
  return variables
