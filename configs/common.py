"""The training config every experiment starts from (`base_config()`).

Fields (all overridable with --config.KEY=VALUE; unknown keys are errors):

  model                 the network, field by field (`gcp_jax.models.
                        ModelConfig`): backbone, head, representation, dim,
                        num_iters, representation_options, backbone_options,
                        head_options; e.g. --config.model.num_iters=3 or
                        --config.model.dim=128. `model_config(NAME)` fills
                        it from a published name such as "resnet50_isqrt"
  num_classes           0 = from the data set (must match it otherwise)
  extra_outputs         classifier outputs beyond the data's classes that no
                        label uses (1: the MindSpore recipe's 1001-way head
                        over ImageNet's 1000 classes); 0 = none
  init_scheme           weights of a model trained from scratch: "module"
                        (each layer's PyTorch-default initialiser),
                        "mindspore" (the TPAMI seed's init_weight),
                        "mobilenet_v2" (N(0, 0.01) classifier) or
                        "pytorch_default" (PyTorch's Conv2d default; the
                        ShuffleNetV2 reference); gcp_jax.train.init_schemes
  half_precision        bf16 backbone; params and the GCP head stay float32
  sync_bn               BatchNorm statistics averaged over all devices
                        (False: per-device, PyTorch DataParallel semantics)
  dropcov_global_rate   DropCov rate from the global batch (False: per device,
                        as the reference under DataParallel)
  data                  input pipeline (`gcp_jax.data.pipeline`)
  init_from             "" or a PyTorch (.pth, .pth.tar) / MindSpore (.ckpt)
                        checkpoint of the GCP papers' models to start from
                        (gcp_jax.train.pretrained; --mode=eval evaluates it)
  init_from_ignore      regexes of arrays not taken from init_from (fresh
                        init instead), e.g. ("head/fc/.*",) for new classes
  init_from_extra_class  MindSpore 1001-way heads: "last" drops output 1000
                         (the seed's image-folder labels), "first" drops
                         output 0 (background), "keep" keeps all
  learning_rate         base LR, used as given (never rescaled silently)
  optimizer             `gcp_jax.train.optim.create_optimizer`
  schedule              `gcp_jax.train.schedules.create_lr_schedule`
  label_smoothing       epsilon of smoothed targets
  label_smoothing_style "uniform" (eps / K on every class, PyTorch / timm)
                        or "others" (1 - eps on the true class, eps / (K-1)
                        on the others, MindSpore; gcp_jax.ops.losses)
  ema_decay             > 0: keep an exponential moving average of the
                        weights (and BN statistics), evaluated next to them
                        as ema_top1 / ema_top5 (DeiT: 0.99996); 0 = off
  best_metric           eval metric choosing WORKDIR/best: "top1" or
                        "ema_top1" (the DeiT reference selects by the EMA)
  num_epochs            training length; num_train_steps > 0 overrides it
  gradient_probe        every_steps K > 0: the GCP_Optimization probe (loss and
                        gradient change along dL/dX after the stem, eta in
                        linspace(eta_min, eta_max, num_etas)) at in-epoch
                        steps 0, K, 2K, ... on the pre-update weights, to
                        WORKDIR/gradient_probe.json (gcp_jax.train.probe_hook)
  robustness            --mode=robustness (gcp_jax.train.robustness): source
                        "on_the_fly" (corrupt config.data's eval split with
                        imagecorruptions), "folder" (the released ImageNet-C
                        tree data_dir/CORRUPTION/SEVERITY/CLASS/IMAGE) or
                        "tfds" (imagenet2012_corrupted in data_dir);
                        corruptions (default the 15 of mCE), include_extra
                        (add the 4 extra ones), severities (1..5), seed (of
                        the on-the-fly corruption and of the subset),
                        max_images_per_cell (0 = all; else that many images
                        drawn with seed, the same in every cell);
                        source "imagenet_p": ImageNet-P videos in data_dir
                        (PERTURBATION/CLASS/VIDEO.mp4), the `perturbations`
                        (default the 10), flip probability and top-5
                        distance (max_images_per_cell: videos)
  log_every_steps, eval_every_epochs, checkpoint_every_epochs,
  keep_checkpoints      reporting and checkpoint cadence
  seed                  initialisation, dropout and data order
"""

import ml_collections

from gcp_jax.data.config import default_data_config
from gcp_jax.model_config import ModelConfig, published_config


def model_config(model: ModelConfig | str = ModelConfig()
                 ) -> ml_collections.ConfigDict:
  """`config.model` for a ModelConfig or a published model name
  (`gcp_jax.model_config.model_names()`); every field is present, so each can
  be overridden on the command line."""
  if isinstance(model, str):
    model = published_config(model)
  return ml_collections.ConfigDict(model.as_dict())


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = model_config()
  config.num_classes = 0
  config.extra_outputs = 0
  config.init_scheme = "module"
  config.half_precision = False
  config.sync_bn = True
  config.dropcov_global_rate = False
  config.data = default_data_config()
  config.init_from = ""
  config.init_from_ignore = ()
  config.init_from_extra_class = "last"
  config.learning_rate = 0.1
  config.optimizer = ml_collections.ConfigDict({
      "name": "sgd", "momentum": 0.9, "nesterov": False,
      "weight_decay": 1e-4, "no_decay": (), "lr_multipliers": (),
      "b1": 0.9, "b2": 0.999, "eps": 1e-8})
  config.schedule = ml_collections.ConfigDict({
      "name": "step", "milestones": (30, 60, 90), "gamma": 0.1})
  config.label_smoothing = 0.0
  config.label_smoothing_style = "uniform"
  config.ema_decay = 0.0
  config.best_metric = "top1"
  config.num_epochs = 100
  config.num_train_steps = -1
  config.gradient_probe = ml_collections.ConfigDict({
      "every_steps": 0, "eta_min": 0.1, "eta_max": 75.0, "num_etas": 50,
      "bn_mode": "batch"})
  config.robustness = ml_collections.ConfigDict({
      "source": "on_the_fly", "data_dir": "",
      "corruptions": ("gaussian_noise", "shot_noise", "impulse_noise",
                      "defocus_blur", "glass_blur", "motion_blur",
                      "zoom_blur", "snow", "frost", "fog", "brightness",
                      "contrast", "elastic_transform", "pixelate",
                      "jpeg_compression"),
      "include_extra": False, "severities": (1, 2, 3, 4, 5), "seed": 0,
      "max_images_per_cell": 0,
      "perturbations": ("gaussian_noise", "shot_noise", "motion_blur",
                        "zoom_blur", "snow", "brightness", "translate",
                        "rotate", "tilt", "scale")})
  config.log_every_steps = 100
  config.eval_every_epochs = 1
  config.checkpoint_every_epochs = 1
  config.keep_checkpoints = 3
  return config


def use_imagenet(config: ml_collections.ConfigDict, batch_size: int) -> None:
  """Points `config.data` at tfds imagenet2012 at 224 px (Inception crops,
  eval resize 256 -> centre 224) with this global train and eval batch."""
  config.data.name = "imagenet2012"
  config.data.image_size = 224
  config.data.crop_scale_min = 0.08
  config.data.global_batch_size = batch_size
  config.data.eval_batch_size = batch_size
