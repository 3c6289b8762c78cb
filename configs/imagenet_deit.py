"""DeiT + DropCov on ImageNet (DropCov, NeurIPS 2022, transformer recipe).

Command (ARCH: deit_s_dropcov (default), deit_t_dropcov, deit_s_cls, ...):
  python main.py --config configs/imagenet_deit.py:deit_s_dropcov \\
      --config.data.data_dir=/path/to/tfds --workdir /runs/deit_s_dropcov

Recipe (METHOD 6.5): AdamW (decoupled weight decay 0.03, no decay on 1-D
parameters and biases: timm's filter_bias_and_bn), LR 1e-3 for batch 1024,
cosine per epoch after 5 warm-up epochs from 1e-6 to a minimum of 1e-5, 300
epochs + 10 cooldown, label smoothing 0.1, stochastic depth 0.1, Inception
crops + flip at 224.

Not implemented yet (the reference also uses them): RandAugment, mixup /
cutmix, random erasing and the model EMA; expect a lower top-1 than the
papers' until they are. Expected top-1 (%) with the full recipe: DeiT-S 79.8,
DeiT-S + DropCov 82.4 (DropCov README; its tokenizer is a conv stem, ours the
DeiT patch embedding).
"""

from configs.common import base_config, use_imagenet


def get_config(arg: str = "deit_s_dropcov"):
  config = base_config()
  config.model = arg
  use_imagenet(config, 1024)
  config.learning_rate = 1e-3
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 0.03
  config.optimizer.no_decay = ("@1d",)
  config.schedule = {"name": "cosine", "warmup_epochs": 5,
                     "warmup_lr": 1e-6, "min_lr": 1e-5,
                     "cooldown_epochs": 10}
  config.label_smoothing = 0.1
  config.num_epochs = 310
  config.model_overrides.drop_path_rate = 0.1
  return config
