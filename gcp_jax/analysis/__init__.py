"""Analyses built on the library: probes, landscapes, Hessian spectra.

  gradient_probe     loss / gradient change along the activation gradient
                     (GCP_Optimization's Lipschitzness probe,
                     docs/method.md §10.1)
  directions         filter-normalised directions in weight space
  landscape          1-D / 2-D loss landscapes and interpolations, cached and
                     resumable (landscape_cache: cache keys, fingerprints)
  evaluation         loss and accuracy over batches, sharded over a mesh
  hessian            the Hessian of a model's loss (a block of it) as an HVP
  spectral           power iteration, Lanczos, Hutchinson trace, SLQ density
  preconditioning    the normalisation's backward as a pre-conditioner
  forward            BN modes ('batch' / 'running'), batch checks (meshes:
                     `gcp_jax.parallel`)
  results_io         result dataclasses <-> .json / .npz, atomic writes
  robustness_metrics ImageNet-C CE / mCE / relative mCE (AlexNet-normalised),
                     ImageNet-P flip probability and top-5 distance (numpy)

Nothing here imports `gcp_jax.train` (the training loop imports the probe).
"""
