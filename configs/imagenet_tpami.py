"""The TPAMI 2023 seed's own ImageNet recipe (MindSpore GCP-DropCov).

Command (ARCH one of the rows below):
  python main.py --config configs/imagenet_tpami.py:ARCH \\
      --config.data.data_dir=/path/to/tfds --workdir /runs/tpami_ARCH

The recipe of the seed's `train.py` with `config/resnet{18,34,50}_imagenet
2012_config.yaml` on 4 devices (the README's command), as gcp-jax options
(docs/method.md §8.5; docs/design.md for each deviation):

  batch         4 x 64 = 256 (5004 steps per epoch, last batch dropped)
  schedule      LR 0.1, x0.1 at epochs 30, 60 and 90: the seed's per-step
                array of 30 x 5004 steps at each of 0.1 / 0.01 / 0.001 /
                0.0001; it trains the yaml's 100 epochs of it
  optimiser     Momentum 0.9, weight decay 1e-4 except BatchNorm gamma /
                beta and biases (`optimizer.no_decay = ("@bn_and_bias",)`)
  loss          label smoothing 0.1 over 1001 outputs, the true class at
                exactly 0.9 and each other output at 0.1 / 1000
                (`label_smoothing_style = "others"`); ImageNet's 1000
                classes + 1 output no label uses (`extra_outputs = 1`), so
                the seed's 1001-way checkpoints load unchanged
                (`init_from_extra_class = "keep"`)
  init          XavierUniform convolutions, TruncatedNormal(0.01) dense
                layers, zero dense biases (`init_scheme = "mindspore"`)
  data          Inception crop (scale 0.08-1, ratio 3/4-4/3) + flip at
                224; evaluation resize 256, centre 224
  model         d = 128, 5 Newton-Schulz steps (DropCov rows: the DropCov
                head); ResNet-50 pads 'same' as MindSpore does; BatchNorm
                epsilons the seed's (`bn_epsilon = "mindspore"`: 1e-4, and
                1e-5 in the stem and shortcut BNs of ResNet-18/34; 1e-4 in
                the head's reduction BN)
  precision     bf16 backbone without loss scaling, where the seed runs
                fp16 (amp O3) with a static loss scale of 1024
                (`half_precision`; set it False for float32)

The seed README's table (ImageNet top-1 %, parameters, FLOPs; ARCH):

  ResNet-18 + Fast-MPN   74.64  19.6 M  3.11 G  resnet18_isqrt_d128
  ResNet-18 + DropCov    73.8   19.6 M  3.11 G  resnet18_dropcov_d128
  ResNet-34 + Fast-MPN   76.27  29.7 M  5.56 G  resnet34_isqrt_d128
  ResNet-34 + DropCov    76.13  29.7 M  5.56 G  resnet34_dropcov_d128
  ResNet-50 + Fast-MPN   77.71  32.3 M  6.19 G  resnet50_isqrt_d128
  ResNet-50 + DropCov    77.77  32.0 M  6.19 G  resnet50_dropcov_d128
"""

from configs.common import base_config, model_config, use_imagenet

ARCHS = ("resnet18_isqrt_d128", "resnet18_dropcov_d128",
         "resnet34_isqrt_d128", "resnet34_dropcov_d128",
         "resnet50_isqrt_d128", "resnet50_dropcov_d128")


def get_config(arg: str = "resnet50_isqrt_d128"):
  if arg not in ARCHS:
    raise ValueError(f"configs/imagenet_tpami.py: ARCH must be one of "
                     f"{', '.join(ARCHS)}, got {arg!r}.")
  config = base_config()
  config.model = model_config(arg)
  if arg.startswith("resnet50"):
    config.model.backbone_options.padding = "same"
  config.model.backbone_options.bn_epsilon = "mindspore"
  config.model.head_options.bn_epsilon = 1e-4
  use_imagenet(config, 256)
  config.extra_outputs = 1
  config.init_from_extra_class = "keep"
  config.init_scheme = "mindspore"
  config.half_precision = True
  config.learning_rate = 0.1
  config.optimizer.weight_decay = 1e-4
  config.optimizer.no_decay = ("@bn_and_bias",)
  config.schedule = {"name": "step", "milestones": (30, 60, 90),
                     "gamma": 0.1}
  config.num_epochs = 100
  config.label_smoothing = 0.1
  config.label_smoothing_style = "others"
  return config
