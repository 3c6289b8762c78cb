"""fast-MPN-COV fine-grained fine-tuning from an ImageNet checkpoint.

Command (DATASET: cub (default), aircraft or cars; only the README's
expected numbers differ):
  python main.py --config configs/finetune_fmpn.py:cub \\
      --config.data.data_dir=/data/CUB_200_2011_folder \\
      --init_from=/ckpt/mpncovresnet50.pth --workdir /runs/fmpn_cub

`data_dir` holds `train/CLASS/IMG` and `val/CLASS/IMG` (the ImageFolder
layout of the seeds). `init_from` is a fast-MPN-COV / GCP_Optimization /
DropCov `.pth(.tar)` or a MindSpore `.ckpt` of the same architecture
(default model resnet50_isqrt: d=256, 5 iterations, stride-1 layer4); the
1000-way classifier is replaced by a fresh one for the data set's classes
(`init_from_ignore = ("head/fc/.*",)`), everything else, the reduction
block included, comes from the file.

Recipe (docs/method.md §8.5, fast-MPN-COV `finetune/finetune.sh`): 448 px input
(train: resize short side 448, centre crop 448, random flip; eval: the same
crop and its mirror image, logits averaged), batch 10, SGD momentum 0.9,
weight decay 1e-3 on all parameters, LR 1.2e-3 constant for 100 epochs,
classifier LR x5 (`classifier_factor`). The reference resizes Aircraft to
512 x 512 and Cars to 448 x 448 ignoring the aspect ratio; here every data
set uses the CUB transform (aspect kept).

Expected top-1 (%) with ResNet-50, paper / authors' reproduction (fast-MPN-COV
README): CUB 88.1 / 88.0, Aircraft 90.0 / 90.3, Cars 92.8 / 92.3.
"""

from configs.common import base_config, model_config

DATASETS = ("cub", "aircraft", "cars")


def get_config(arg: str = "cub"):
  if arg not in DATASETS:
    raise ValueError(f"configs/finetune_fmpn.py: DATASET must be one of "
                     f"{', '.join(DATASETS)}, got {arg!r}.")
  config = base_config()
  config.model = model_config("resnet50_isqrt")
  config.init_from_ignore = ("head/fc/.*",)
  config.data.name = "image_folder"
  config.data.image_size = 448
  config.data.resize_size = 448
  config.data.train_augment = "resize_crop_flip"
  config.data.global_batch_size = 10
  config.data.eval_batch_size = 10
  config.data.eval_views = 2
  config.learning_rate = 1.2e-3
  config.optimizer.weight_decay = 1e-3
  config.optimizer.lr_multipliers = (("head/fc/.*", 5.0),)
  config.schedule = {"name": "constant"}
  config.num_epochs = 100
  return config
