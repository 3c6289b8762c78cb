"""gcp-jax: Global Covariance Pooling networks in JAX/Flax.

Subpackages (lower never imports higher):
  gcp_jax.ops    pure-jnp math of covariance pooling and its normalisations.

Modules:
  gcp_jax.xla_options  the XLA compiler options of the compiled steps.
  gcp_jax.allocator    glibc malloc settings for XLA:CPU training processes.
"""

__version__ = "0.1.0"
