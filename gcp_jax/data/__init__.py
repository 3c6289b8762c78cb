"""Input data for gcp-jax."""
