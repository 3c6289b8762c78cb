"""Explicit model configs: published names, build_model, command-line
overrides and their errors.

The published names are checked against modules built here directly from
the module classes (a test-only transcription of the naming rule), not
through the registry under test.
"""

import jax
import jax.numpy as jnp
import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from configs.common import model_config
from gcp_jax.model_config import ModelConfig, model_names, published_config
from gcp_jax.models import Runtime, build_model, create_model
from gcp_jax.models import (dropcov_vit, heads, mobilenet_v2, resnet,
                            se_resnet, shufflenet_v2, token_heads, vgg,
                            vit)
from gcp_jax.train import loop
from gcp_jax.errors import ConfigError

NUM_CLASSES = 7
RESNETS = {"resnet18": ((2, 2, 2, 2), resnet.BasicBlock),
           "resnet34": ((3, 4, 6, 3), resnet.BasicBlock),
           "resnet50": ((3, 4, 6, 3), resnet.Bottleneck),
           "resnet101": ((3, 4, 23, 3), resnet.Bottleneck),
           "resnet152": ((3, 8, 36, 3), resnet.Bottleneck),
           "resnet_tiny": ((1, 1, 1, 1), resnet.BasicBlock)}
VITS = {"deit_t": dict(embed_dim=192, depth=12, num_heads=3),
        "deit_s": dict(embed_dim=384, depth=12, num_heads=6),
        "deit_tiny_test": dict(image_size=32, patch_size=8, embed_dim=32,
                               depth=2, num_heads=2)}
VIT_GCP_DIM = {"deit_t": 64, "deit_s": 64, "deit_tiny_test": 8}
VIT_DROPCOV = {"deit_t": (6, 14), "deit_s": (6, 24), "deit_tiny_test": (2, 4)}
# DropCov's transformer presets: module fields, DropCov (H, w).
DROP_VITS = {"deit_drop_tiny": dict(embed_dim=240, depth=12, num_heads=4,
                                    mlp_ratio=2.5),
             "deit_drop_small": dict(embed_dim=384, depth=12, num_heads=6),
             "deit_drop_base": dict(embed_dim=768, depth=12, num_heads=12),
             "deit_drop_tiny_test": dict(image_size=64, embed_dim=32,
                                         depth=2, num_heads=2,
                                         mlp_ratio=2.5)}
DROP_VIT_DROPCOV = {"deit_drop_tiny": (6, 14), "deit_drop_small": (6, 24),
                    "deit_drop_base": (12, 24), "deit_drop_tiny_test": (2, 4)}
DROP_VIT_GCP_DIM = {"deit_drop_tiny": 64, "deit_drop_small": 64,
                    "deit_drop_base": 64, "deit_drop_tiny_test": 8}
REPS = {"isqrt": "isqrt", "eig": "eig", "epn": "epn", "svpn": "svpn",
        "bcnn": "bcnn", "cov": "none"}
VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512),
         (512, 512, 512))
VGG_HEADS = {
    "gap": heads.GAPHead(NUM_CLASSES),
    "isqrt": heads.GCPHead(NUM_CLASSES, 256, "isqrt", (("num_iters", 5),),
                           hidden_dims=(4096, 4096)),
    "bcnn": heads.GCPHead(NUM_CLASSES, 256, "bcnn", reduce=False),
    "cbp": heads.GCPHead(NUM_CLASSES, 256, "cbp", reduce=False),
}
# GCP_Optimization mobile networks: the module and the classifier dropout of
# the reference (MobileNetV2 `Dropout(0.2)`, ShuffleNetV2 none); both keep
# stride 2 and use a ReLU6 reduction block.
MOBILE = {"mobilenet_v2": (mobilenet_v2.MobileNetV2, 0.2),
          "shufflenet_v2": (shufflenet_v2.ShuffleNetV2, 0.0)}


def _direct(name: str):
  """The module a published name stands for, from the module classes."""
  if name.startswith("se_resnet50_"):
    if name == "se_resnet50_gap":
      return se_resnet.SEResNet(heads.GAPHead(NUM_CLASSES), last_stride=2)
    dim = 128 if name.endswith("_d128") else 256
    return se_resnet.SEResNet(heads.GCPHead(
        NUM_CLASSES, dim, "isqrt", (("num_iters", 5),)), last_stride=1)
  if name.startswith("vgg16_bn_"):
    return vgg.VGG(VGG16, VGG_HEADS[name[len("vgg16_bn_"):]])
  for arch in sorted(DROP_VITS, key=len, reverse=True):
    if name.startswith(arch + "_"):
      head_name = name[len(arch) + 1:]
      if head_name == "cls":
        head = token_heads.ClsHead(NUM_CLASSES, linear_init="timm")
      elif head_name == "gcp":
        head = token_heads.TokenGCPHead(
            NUM_CLASSES, DROP_VIT_GCP_DIM[arch], "isqrt", (("num_iters", 5),),
            linear_init="timm")
      else:
        num_heads, head_dim = DROP_VIT_DROPCOV[arch]
        head = token_heads.TokenDropCovHead(
            NUM_CLASSES, num_heads=num_heads, head_dim=head_dim,
            projections=3, centering="scalar", linear_init="timm")
      return dropcov_vit.DropCovViT(head=head, **DROP_VITS[arch])
  for arch, (module, rate) in MOBILE.items():
    if name.startswith(arch + "_"):
      head_name = name[len(arch) + 1:]
      if head_name == "gap":
        head = heads.GAPHead(NUM_CLASSES, dropout_rate=rate)
      else:
        dim = 128 if head_name == "isqrt_d128" else 256
        head = heads.GCPHead(NUM_CLASSES, dim, "isqrt", (("num_iters", 5),),
                             activation="relu6", dropout_rate=rate)
      return module(head=head, last_stride=2)
  for arch, fields in VITS.items():
    if name.startswith(arch + "_"):
      head_name = name[len(arch) + 1:]
      if head_name == "cls":
        head = token_heads.ClsHead(NUM_CLASSES)
      elif head_name == "gcp":
        head = token_heads.TokenGCPHead(
            NUM_CLASSES, VIT_GCP_DIM[arch], "isqrt", (("num_iters", 5),))
      else:
        num_heads, head_dim = VIT_DROPCOV[arch]
        head = token_heads.TokenDropCovHead(NUM_CLASSES, num_heads=num_heads,
                                            head_dim=head_dim)
      return vit.VisionTransformer(head=head, **fields)
  arch = max((a for a in RESNETS if name.startswith(a + "_")), key=len)
  stages, block = RESNETS[arch]
  head_name = name[len(arch) + 1:]
  dim = 16 if arch == "resnet_tiny" else 256
  if head_name.endswith("_d128"):
    head_name, dim = head_name[:-5], 128
  tiny = dict(width=8, small_input=True) if arch == "resnet_tiny" else {}
  if head_name == "gap":
    return resnet.ResNet(stages, block, heads.GAPHead(NUM_CLASSES),
                         last_stride=2, **tiny)
  if head_name == "dropcov":
    head = heads.DropCovHead(NUM_CLASSES, dim)
  else:
    options = (("num_iters", 5),) if head_name == "isqrt" else ()
    head = heads.GCPHead(NUM_CLASSES, dim, REPS[head_name], options)
  return resnet.ResNet(stages, block, head, last_stride=1, **tiny)


@pytest.mark.parametrize("name", model_names())
def test_published_name_is_the_directly_built_module(name):
  """Every field of the backbone and the head (repr lists them all)."""
  assert repr(create_model(name, NUM_CLASSES)) == repr(_direct(name))


def test_published_names_cover_every_depth_and_head():
  assert len(model_names()) == 6 * 8 + 5 * 7 + 3 + 3 * 3 + 4 + 4 * 3 + 5


def _shapes(model, size=16):
  return jax.tree.map(lambda a: (a.shape, a.dtype), jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                         False)))


def test_explicit_config_builds_the_published_variables():
  explicit = ModelConfig(backbone="resnet_tiny", head="gcp",
                         representation="isqrt", dim=16, num_iters=5)
  assert explicit == published_config("resnet_tiny_isqrt")
  assert _shapes(build_model(explicit, 10)) == _shapes(
      create_model("resnet_tiny_isqrt", 10))


def test_overrides_merge_into_the_published_config():
  model = create_model("resnet_tiny_isqrt", 10, dim=8, num_iters=3,
                       width=4, representation_options={"method": "eigh"},
                       dtype=jnp.bfloat16, bn_axis_name="data")
  assert (model.width, model.dtype, model.bn_axis_name) == (
      4, jnp.bfloat16, "data")
  assert model.head.dim == 8 and model.head.bn_axis_name == "data"
  assert model.head.representation_options == (("method", "eigh"),
                                               ("num_iters", 3))


def test_gap_keeps_the_classification_stride_unless_set():
  gap = ModelConfig(backbone="resnet_tiny", head="gap")
  assert build_model(gap, 10).last_stride == 2
  assert build_model(gap.replace(backbone_options={"last_stride": 1}),
                     10).last_stride == 1


@pytest.mark.parametrize("config,message", [
    (ModelConfig(backbone="resnet51"), "Unknown backbone 'resnet51'"),
    (ModelConfig(head="gcpp"), "Unknown head 'gcpp'"),
    (ModelConfig(backbone="deit_s", head="gcp"),
     "Head 'gcp' takes map features.*token_gcp"),
    (ModelConfig(backbone_options={"widht": 8}),
     "Unknown backbone_options widht; valid:.*width"),
    (ModelConfig(head_options={"dim": 8}), "Unknown head_options dim"),
    (ModelConfig(representation="epn", num_iters=3),
     "num_iters=3 is the Newton-Schulz count of the isqrt"),
    (ModelConfig(representation="isqrtt"), "Unknown representation"),
])
def test_bad_model_configs_name_the_problem(config, message):
  with pytest.raises(ValueError, match=message):
    build_model(config, 10)


def test_global_dropcov_rate_needs_the_dropcov_head():
  with pytest.raises(ValueError, match="needs the 'dropcov' head"):
    build_model(ModelConfig(), 10, Runtime(rate_axis_name="data"))


def _parse(*overrides: str):
  """`config` as main.py's flag parses it from this command line."""
  argv = ["main.py", "--config=configs/default.py", *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def test_command_line_overrides_reach_the_model():
  config = _parse("--config.model.num_iters=3", "--config.model.dim=128",
                  "--config.model.backbone_options.width=8")
  model = loop.build_model(config, 10)
  assert model.width == 8 and model.head.dim == 128
  assert model.head.representation_options == (("num_iters", 3),)
  config = _parse("--config.model.representation=eig")
  assert loop.build_model(config, 10).head.representation == "eig"
  config = _parse("--config.model.representation=eig",
                  "--config.model.num_iters=3")
  with pytest.raises(ConfigError, match="config.model: num_iters=3 is"):
    loop.build_model(config, 10)


def test_config_model_with_an_unknown_key_is_a_config_error():
  config = _parse()
  with config.unlocked():
    config.model.dims = 3
  with pytest.raises(ConfigError, match="Unknown model config key.*dims"):
    loop.build_model(config, 10)


def test_model_config_round_trips_through_a_config_dict():
  for name in ("resnet50_svpn_d128", "deit_s_dropcov", "resnet_tiny_gap"):
    config = ml_collections.ConfigDict({"model": model_config(name)})
    assert loop.model_config(config) == published_config(name)
