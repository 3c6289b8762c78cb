"""Training and evaluation: optimiser, schedules, data-parallel steps,
checkpoints, the loop (`gcp_jax.train.loop.train_and_evaluate`).

  config_check  named choices (schedule, optimiser) and the loop's fields
  schedules     learning-rate schedules of the GCP recipes
  optim         SGD / AdamW with decay masks and lr multipliers
  state         the replicated TrainState and a model's step-0 state
  init_schemes  fresh weights re-drawn as a recipe does (`init_scheme`)
  steps         compiled data-parallel train and eval steps
  evaluation    a config's eval steps and one pass over the eval batches
  checkpoint    Orbax checkpoints of a workdir: latest-N and the best
  pretrained    `init_from`: published weights to train or evaluate from
  probe_hook    the gradient-direction probe during training
  reporting     TensorBoard files and the console progress line
  loop          a run's set-up and the training loop
  restore       a trained workdir: evaluate, load_checkpoint, export_pytorch
  robustness    --mode=robustness: a checkpoint on the ImageNet-C cells, resumable

Meshes and sharding come from `gcp_jax.parallel`; the probe from
`gcp_jax.analysis`.
"""
