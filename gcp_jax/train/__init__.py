"""Training and evaluation: optimiser, schedules, data-parallel steps,
checkpoints, the loop (`gcp_jax.train.loop.train_and_evaluate`)."""
