"""fast-MPN-COV fine-grained fine-tuning of MPN-COV VGG-16-BN (VGG-D).

Command (DATASET: cub (default), aircraft or cars):
  python main.py --config configs/finetune_fmpn_vgg.py:cub \\
      --config.data.data_dir=/data/CUB_200_2011_folder \\
      --init_from=/ckpt/mpncovvgg16_bn.pth --workdir /runs/vgg_cub

The model is `vgg16_bn_isqrt` (fast-MPN-COV's `mpncovvgg16_bn`: VGG-16-BN
without its fifth max-pool, d = 256, 5 iterations) with its classifier
replaced, as the reference's `model_init.Newmodel` does for a pretrained
`mpncovvgg16_bn` with `--representation None`, by one FC from the 32896-d
vector to the classes (`hidden_dims=()`). `init_from` is the authors'
ImageNet `mpncovvgg16_bn` `.pth` (README: 650.4 MB): its features and
reduction block load, its three classifier layers are ignored
(`init_from_ignore`) and the new FC starts fresh.

Recipe (fast-MPN-COV `finetune/finetune_mpncovvggd16.sh`, `main.py`): the
data of `finetune_fmpn.py` (448 px, batch 10, 2-view evaluation), SGD
momentum 0.9, weight decay 1e-4 on all parameters (the classifier's too:
the reference exempts it only for arch names starting with 'vgg'), LR 3e-3
for 40 epochs, x0.1 at epoch 20 (`lr_params=20 40`: the 40 is the last
epoch and never reached), classifier LR x20 (`classifier_factor=20`).

Expected top-1 (%) with VGG-D, paper / authors' reproduction (fast-MPN-COV
finetune/README.md): CUB 87.2 / 87.0, Aircraft 90.0 / 91.7, Cars 92.5 / 93.2.
"""

from configs import finetune_fmpn
from configs.common import model_config
from gcp_jax.model_config import published_config


def get_config(arg: str = "cub"):
  config = finetune_fmpn.get_config(arg)
  config.model = model_config(published_config("vgg16_bn_isqrt").replace(
      head_options={"hidden_dims": ()}))
  config.learning_rate = 3e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.lr_multipliers = (("head/fc/.*", 20.0),)
  config.schedule = {"name": "step", "milestones": (20,), "gamma": 0.1}
  config.num_epochs = 40
  config.init_from_ignore = ("head/fc/.*", "head/hidden.*")
  return config
