"""Studies: end-to-end experiments that train models with `gcp_jax.train`
and measure them with `gcp_jax.analysis`, for the notebooks.

  optimization   GAP vs GCP vs DropCov: the gradient-direction probe during
                 training, filter-normalised loss landscapes, Hessian top
                 eigenvalue and trace (notebooks/loss_landscape.ipynb)
  summary        the numbers the study reports: probe bands, landscape
                 rise, the summary table
  plots          matplotlib figures of those results, saved as PNG
  presets        choosing a study's named settings
  convergence    GAP vs GCP vs DropCov under LRnorm / LRfast / LRadju:
                 held-out top-1 against the epoch, epochs to GAP's target
                 (notebooks/gcp_merits.ipynb)
  corruption     the same models on digits-C: errors by corruption and
                 severity, CE and mCE relative to GAP (gcp_merits.ipynb)
  descriptor_probe  linear probe of second-order descriptors of the digits'
                 patches (`main.py --mode=probe`, configs/digits_probe.py)

This is the top layer: it imports `gcp_jax.train` and `gcp_jax.analysis`;
nothing in the package imports it.
"""
