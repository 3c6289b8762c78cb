"""gcp-jax: Global Covariance Pooling networks in JAX/Flax.

Subpackages (lower never imports higher):
  gcp_jax.ops       pure-jnp math of covariance pooling and its normalisations.
  gcp_jax.models    Flax models: backbones and GAP / GCP / DropCov heads.
  gcp_jax.convert   published PyTorch / MindSpore weights <-> the models.
  gcp_jax.data      the input pipeline (tf.data); imports no subpackage.
  gcp_jax.analysis  probes, landscapes, Hessian spectra of models.
  gcp_jax.train     the training loop (imports the analysis' probe, data).
  gcp_jax.studies   experiments that train and analyse (the notebooks).

Modules (below every subpackage; they import only each other):
  gcp_jax.backend    every backend-specific (CPU / GPU / TPU) choice: 1 x 1
                     convolutions, the XLA options of each compiled step, and
                     whether main.py tunes glibc's allocator. Nothing else in
                     the library branches on the backend.
  gcp_jax.allocator  glibc malloc settings for XLA:CPU training processes.
  gcp_jax.parallel   the 1-D device mesh (axis "data"), placing batches and
                     state on it, the batch-size check and the masked
                     evaluation sums; used by train and analysis.
  gcp_jax.errors     GcpJaxError (user errors) and ConfigError.
  gcp_jax.model_config  ModelConfig, the explicit description of a network,
                     and the papers' model names; imports no JAX (config
                     files use it).

Layering: ops (pure jnp) <- models (Flax) <- train / analysis <- studies;
nothing imports from a layer above it (tests/test_layering.py).
"""

__version__ = "0.1.0"
