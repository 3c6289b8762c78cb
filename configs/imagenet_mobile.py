"""ImageNet MobileNetV2 / ShuffleNetV2 recipes of GCP_Optimization.

Command (ARCH one of mobilenet_v2_gap, mobilenet_v2_isqrt,
mobilenet_v2_isqrt_d128, shufflenet_v2_gap, shufflenet_v2_isqrt; MODE one of
lrnorm, lrfast, lradju):
  python main.py --config configs/imagenet_mobile.py:ARCH,MODE \\
      --config.data.data_dir=/path/to/tfds --workdir /runs/ARCH_MODE
Default: mobilenet_v2_isqrt,lrnorm.

Recipes (docs/method.md §8.4, §8.5): SGD momentum 0.9, weight decay 4e-5 on
all parameters (coupled, PyTorch style), plain cross-entropy, Inception
crops + flip at 224, eval resize 256 -> centre 224; LR used as given.

  MobileNetV2 (GCP_Optimization src/main.py, `args.arch.startswith(
  'mobilenet')` branches of main() and adjust_learning_rate()):
    LRnorm  batch  96, lr 0.045 * 0.98^e,  90 epochs (the parser default:
            the branch sets no epoch count)
    LRfast  batch  96, lr 0.06 * 0.92^e,  100 epochs
    LRadju  batch 192, lr 0.06 -> 0.01 -> 1e-3 -> 1e-5 linearly at epochs
            0, 50, 100, 150,            150 epochs
  ShuffleNetV2 1.0x (src/main_shufflenet.py): batch 1024, lr 0.5 (1 - t/T)
    decayed linearly per update to 0 at the end; 240 (LRnorm), 60 (LRfast)
    or 100 (LRadju) epochs.

Initialisation as the reference models (`init_scheme`,
gcp_jax.train.init_schemes): "mobilenet_v2" (the init loop of
MobileNetV2*.py: kaiming-normal fan-out convolutions, N(0, 0.01) classifier,
zero biases) and "pytorch_default" (ShuffleNetV2*.py has no init loop:
PyTorch's Conv2d and Linear defaults).

ShuffleNetV2 also jitters the training crops' colours as its
ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)
(`data.color_jitter`, gcp_jax.data.color_jitter); MobileNetV2 does not.

Expected single-crop top-1 (%) from the GCP_Optimization README
(docs/method.md §9):

  model                  LRnorm  LRfast  LRadju
  mobilenet_v2_gap       71.62   69.29   71.27
  mobilenet_v2_isqrt     74.39   72.45   73.97
  mobilenet_v2_isqrt_d128 73.28          72.58
  shufflenet_v2_gap      67.96   66.13   67.15
  shufflenet_v2_isqrt    71.83   70.29   71.17
"""

from configs.common import base_config, model_config, use_imagenet

# MODE -> (schedule, base lr, batch, epochs) per family.
RECIPES = {
    "mobilenet_v2": {"lrnorm": ("mobilenet_lrnorm", 0.045, 96, 90),
                     "lrfast": ("mobilenet_lrfast", 0.06, 96, 100),
                     "lradju": ("mobilenet_lradju", 0.06, 192, 150)},
    "shufflenet_v2": {"lrnorm": ("linear", 0.5, 1024, 240),
                      "lrfast": ("linear", 0.5, 1024, 60),
                      "lradju": ("linear", 0.5, 1024, 100)},
}
ARCHS = ("mobilenet_v2_gap", "mobilenet_v2_isqrt", "mobilenet_v2_isqrt_d128",
         "shufflenet_v2_gap", "shufflenet_v2_isqrt")


def get_config(arg: str = "mobilenet_v2_isqrt,lrnorm"):
  try:
    model, mode = arg.split(",")
    if model not in ARCHS:
      raise KeyError(model)
    family = "mobilenet_v2" if model.startswith("mobilenet") else (
        "shufflenet_v2")
    schedule, lr, batch, epochs = RECIPES[family][mode]
  except (ValueError, KeyError):
    raise ValueError(
        f"configs/imagenet_mobile.py expects ARCH,MODE with ARCH in "
        f"{', '.join(ARCHS)} and MODE in lrnorm, lrfast, lradju, got "
        f"{arg!r}.") from None
  config = base_config()
  config.model = model_config(model)
  use_imagenet(config, batch)
  config.learning_rate = lr
  config.init_scheme = ("mobilenet_v2" if family == "mobilenet_v2"
                        else "pytorch_default")
  config.optimizer.weight_decay = 4e-5
  config.schedule = {"name": schedule}
  config.num_epochs = epochs
  if family == "shufflenet_v2":
    config.data.color_jitter = (0.4, 0.4, 0.4)
  config.log_every_steps = 100
  return config
