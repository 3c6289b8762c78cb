"""DeiT + DropCov on ImageNet (DropCov, NeurIPS 2022, transformer recipe).

Command (ARCH: deit_s_dropcov (default), deit_t_dropcov, deit_s_cls,
deit_drop_small_dropcov, deit_drop_base_dropcov, ...):
  python main.py --config configs/imagenet_deit.py:deit_s_dropcov \\
      --config.data.data_dir=/path/to/tfds --workdir /runs/deit_s_dropcov

Recipe (docs/method.md §8.5, timm 0.4.12): AdamW (decoupled weight decay 0.03,
no decay on 1-D parameters and biases: timm's filter_bias_and_bn), LR 1e-3 for
batch 1024, cosine per epoch after 5 warm-up epochs from 1e-6 to a minimum of
1e-5, 300 epochs + 10 cooldown, stochastic depth 0.1, Inception crops +
flip at 224, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25 (pixel
mode), mixup 0.8 / CutMix 1.0 (batch mode, switch probability 0.5) with
label smoothing 0.1 folded into the soft targets, and a weight EMA (decay
0.99996). The reference selects its best checkpoint by the EMA's accuracy;
so does this config (best_metric="ema_top1"), and both accuracies are
reported. Left out: timm's random choice of bilinear / bicubic
interpolation (bilinear here) and colour jitter (timm ignores it when
RandAugment is on).

Expected top-1 (%): DeiT-S 79.8, DeiT-S + DropCov 82.4 (DropCov README; its
tokenizer is a conv stem, that of deit_s/deit_t the DeiT patch embedding).

DropCov's own transformer (`deit_drop_{tiny,small,base}_{cls,gcp,dropcov}`,
conv tokenizer, docs/method.md §7.3) takes the numbers of its scripts
(`Transformers/scripts/train_Deit_drop_*.sh`, 8 processes, `-b` per
process; everything else main.py's defaults, the recipe above):
Tiny and Small batch 8 x 128 = 1024, LR 1e-3, weight decay 0.03 (the
defaults here); Base batch 8 x 64 = 512, LR 5e-4 (not scaled by main.py),
weight decay 0.065. The tokenizer's BatchNorm keeps per-device statistics
(sync_bn off), as the scripts run without --sync-bn or --dist-bn.
Expected top-1: DeiT-S + DropCov 82.4 (25.6 M parameters).
"""

from configs.common import base_config, model_config, use_imagenet


def get_config(arg: str = "deit_s_dropcov"):
  config = base_config()
  config.model = model_config(arg)
  base = arg.startswith("deit_drop_base_")
  use_imagenet(config, 512 if base else 1024)
  config.learning_rate = 5e-4 if base else 1e-3
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 0.065 if base else 0.03
  config.optimizer.no_decay = ("@1d",)
  config.schedule = {"name": "cosine", "warmup_epochs": 5,
                     "warmup_lr": 1e-6, "min_lr": 1e-5,
                     "cooldown_epochs": 10}
  config.label_smoothing = 0.1
  config.data.randaugment = "rand-m9-mstd0.5-inc1"
  config.data.random_erasing = 0.25
  config.data.mixup_alpha = 0.8
  config.data.cutmix_alpha = 1.0
  config.data.mix_prob = 1.0
  config.data.mix_switch_prob = 0.5
  config.ema_decay = 0.99996
  config.best_metric = "ema_top1"
  config.num_epochs = 310
  config.model.backbone_options.drop_path_rate = 0.1
  if arg.startswith("deit_drop_"):
    config.sync_bn = False
  return config
