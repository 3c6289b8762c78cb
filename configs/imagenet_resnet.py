"""ImageNet ResNet recipes of GCP_Optimization / DropCov / the TPAMI paper.

Command (ARCH is a registered model name, MODE one of lrnorm, lrfast, lradju):
  python main.py --config configs/imagenet_resnet.py:ARCH,MODE \\
      --config.data.data_dir=/path/to/tfds --workdir /runs/ARCH_MODE
e.g. `configs/imagenet_resnet.py:resnet50_isqrt,lrnorm` or
`:resnet50_dropcov_d128,lradju`. Default: resnet50_isqrt_d128,lrnorm.

Recipe (docs/method.md §8.1, §8.4, §8.5): SGD momentum 0.9, weight decay 1e-4 on
all parameters (coupled, PyTorch style), batch 256, base LR 0.1 (used as given:
change it with --config.learning_rate, nothing rescales it), plain
cross-entropy, Inception crops + flip at 224, eval resize 256 -> centre 224.
LRnorm: 100 epochs, x0.1 every 30; LRfast: 30 epochs, 0.1 (1 - (e - 1)/52)^11;
LRadju: 50 epochs, 0.1 (1 - (e - 1)/49)^2, with e the 0-based epoch as the
reference code evaluates them (so epoch 0 runs at 0.1233 / 0.1041). The
papers' 1-based formula: --config.schedule.reference_epoch_artefact=False
(then LRadju fits 49 epochs: --config.num_epochs=49). ImageNet is read with
tfds from data_dir (prepare it with tfds's manual download: put the
ILSVRC2012 tars into DATA_DIR/downloads/manual and run
`tfds build imagenet2012 --data_dir=DATA_DIR`), or set
--config.data.name=image_folder for a root/{train,val}/CLASS/IMG folder.

Expected single-crop top-1 (%) from the papers' READMEs (docs/method.md §9):

  model                  LRnorm  LRfast  LRadju   source
  resnet18_gap           70.47   66.02   69.62    GCP_Optimization
  resnet18_isqrt         75.48   72.02   74.86    GCP_Optimization (d=256)
  resnet18_isqrt_d128    74.64                    TPAMI (MindSpore)
  resnet18_dropcov_d128  73.8                     TPAMI (MindSpore)
  resnet34_gap           74.19   69.88   73.13    GCP_Optimization / DropCov
  resnet34_isqrt         77.11   73.88   76.81    GCP_Optimization (d=256)
  resnet34_dropcov_d128  76.81                    DropCov
  resnet50_gap           76.02   71.08   75.32    GCP_Optimization / DropCov
  resnet50_isqrt         78.56   75.31   78.03    GCP_Optimization (d=256)
  resnet50_isqrt_d128    78.02           77.72    GCP_Optimization
  resnet50_dropcov_d128  78.19                    DropCov
  resnet101_gap          77.67   73.13   77.53    GCP_Optimization / DropCov
  resnet101_isqrt        79.47   76.38   79.18    GCP_Optimization (d=256)
  resnet101_dropcov_d128 79.51                    DropCov

Wall time: not measured here (no GPU); one epoch is 5004 steps of 256.
"""

from configs.common import base_config, model_config, use_imagenet

SCHEDULES = {"lrnorm": ("lrnorm", 100), "lrfast": ("lrfast", 30),
             "lradju": ("lradju", 50)}


def get_config(arg: str = "resnet50_isqrt_d128,lrnorm"):
  try:
    model, mode = arg.split(",")
    schedule, epochs = SCHEDULES[mode]
  except (ValueError, KeyError):
    raise ValueError(
        f"configs/imagenet_resnet.py expects ARCH,MODE with MODE in "
        f"{', '.join(SCHEDULES)}, got {arg!r}.") from None
  config = base_config()
  config.model = model_config(model)
  use_imagenet(config, 256)
  config.learning_rate = 0.1
  config.optimizer.weight_decay = 1e-4
  config.schedule = {"name": schedule}
  if schedule != "lrnorm":
    config.schedule.reference_epoch_artefact = True
  config.num_epochs = epochs
  config.log_every_steps = 100
  return config
