"""Flax Linen models: backbones with GAP / GCP / DropCov heads.

Synopsis:
  from gcp_jax.models import ModelConfig, build_model, create_model
  model = build_model(ModelConfig(backbone="resnet50", head="gcp",
                                  representation="isqrt", dim=256,
                                  num_iters=5), num_classes=1000)
  model = create_model("resnet50_isqrt", num_classes=1000)   # the same
  variables = model.init(rngs, images, train=False)

  registry.py      BACKBONES, HEADS, build_model(ModelConfig, num_classes)
  published.py     create_model(published name, num_classes, **changes)
  heads.py         GAP / GCP / DropCov heads on a feature map
  token_heads.py   class-token / GCP / DropCov heads on transformer tokens
  resnet.py        ResNet-18..152 (torchvision topology, 'same' padding
                   option for MindSpore files)
  se_resnet.py     the TPAMI seed's SE-ResNet-50
  mobilenet_v2.py  GCP_Optimization's MobileNetV2
  shufflenet_v2.py GCP_Optimization's ShuffleNetV2
  vgg.py           VGG-16-BN without its fifth max-pool (fast-MPN-COV)
  vit.py           DeiT, and the encoder block and token backbone that
                   dropcov_vit.py reuses
  dropcov_vit.py   DropCov's own transformer (DenseNet tokenizer)
  split.py         StemSplit: the stem / from_stem split of CNN backbones;
                   MobileBackbone, ConvBNAct: shared by the mobile nets
  layers.py        convolutions, BatchNorm, dense layers with PyTorch's
                   initialisation and the backend's 1 x 1 convolution
  summary.py       parameters per module and forward FLOPs

`ModelConfig` (backbone, head, representation, dim, num_iters and option
fields, each with its one default) and the papers' model names live in
`gcp_jax.model_config`, which imports no JAX (config files use it).
"""

from gcp_jax.model_config import ModelConfig, model_names, published_config
from gcp_jax.models.published import create_model
from gcp_jax.models.registry import Runtime, build_model

__all__ = ["ModelConfig", "Runtime", "build_model", "create_model",
           "model_names", "published_config"]
