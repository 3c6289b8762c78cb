"""PyTorch versions of the reference GCP models and ops, for tests and
benchmarks only (not part of the `gcp_jax` package; needs torch).

  ops      covariance, Newton-Schulz square root and triu as plain autograd
           code, and as fast-MPN-COV's hand-differentiated
           `torch.autograd.Function`s (`fmpn_head`)
  resnet   torchvision-topology ResNets with GAP, iSQRT-COV, plain-covariance
           and DropCov heads under the references' parameter names
           (`build`, `randomize`, `logits`)
  dropcov_vit  DropCov's transformer (`Deit_drop_*`: DenseNet-style
           tokenizer, sinusoid positions, MGCrP head) without timm, under
           the reference's parameter names (`build`, `randomize`)

Everything runs on the device of its input (CPU or CUDA). The GCP part of
every head computes in float32 with autocast disabled, as a fair mixed
precision run of the references must (their square-root backward mixes
dtypes under autocast).
"""
