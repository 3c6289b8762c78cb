"""fast-MPN-COV (iSQRT-COV, CVPR 2018) from-scratch ImageNet recipe.

Command:
  python main.py --config configs/imagenet_fmpn.py:resnet50 \\
      --config.data.data_dir=/path/to/tfds --workdir /runs/fmpn_r50

ARCH: resnet50 (default) or resnet101, with the d=256 iSQRT-COV head
(5 iterations, 32896-d). Recipe (docs/method.md §8.5): SGD momentum 0.9, weight
decay 1e-4 on all parameters, batch 160, 65 epochs, LR 0.1 x0.1 at epochs
30, 45 and 60. Expected single-crop top-1 error (%): ResNet-50 22.14
(paper) / 21.71 (authors' reproduction); ResNet-101 21.21 / 20.99.
"""

from configs.common import base_config, model_config, use_imagenet

ARCHS = ("resnet50", "resnet101")


def get_config(arg: str = "resnet50"):
  if arg not in ARCHS:
    raise ValueError(f"configs/imagenet_fmpn.py: ARCH must be one of "
                     f"{', '.join(ARCHS)}, got {arg!r}.")
  config = base_config()
  config.model = model_config(f"{arg}_isqrt")
  use_imagenet(config, 160)
  config.learning_rate = 0.1
  config.optimizer.weight_decay = 1e-4
  config.schedule = {"name": "step", "milestones": (30, 45, 60),
                     "gamma": 0.1}
  config.num_epochs = 65
  return config
