"""gcp-jax: Global Covariance Pooling networks in JAX/Flax.

Subpackages (lower never imports higher):
  gcp_jax.ops    pure-jnp math of covariance pooling and its normalisations.

Modules:
  gcp_jax.backend    every backend-specific (CPU / GPU / TPU) choice: 1 x 1
                     convolutions, the XLA options of each compiled step, and
                     whether main.py tunes glibc's allocator. Nothing else in
                     the library branches on the backend.
  gcp_jax.allocator  glibc malloc settings for XLA:CPU training processes.
"""

__version__ = "0.1.0"
