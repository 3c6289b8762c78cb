"""Batch normalisation in training mode, written for a cheap backward pass.

For features x of shape `(..., C)` (NHWC maps or tokens) and per-channel
scale gamma and bias beta, both `(C,)`, over the M = prod(x.shape[:-1])
positions (and, with `axis_name`, over every device of that mapped axis):

  mu    = E[x],   sigma^2 = max(E[x^2] - mu^2, 0)          (biased, as Flax)
  a     = gamma / sqrt(sigma^2 + eps),   b = beta - mu a
  y     = x a + b  ( = gamma (x - mu) / sqrt(sigma^2 + eps) + beta )

Statistics and the normalisation are at least float32 (bf16 in, float32
moments and output; float64 stays float64); the layer casts the output to
its compute dtype.

Why `x a + b` and not Flax's `(x - mu) * a + beta`: the two are the same
function, but their autodiff differs in what the backward pass keeps. The
reverse pass of `x a + b` needs x, which the network holds anyway (it is the
convolution's output), plus C-vectors; the reverse pass of `(x - mu) * a`
keeps the centred copy x - mu, one more activation-sized array per layer,
written in the forward pass and read back in the backward pass (and a
scaled copy of the output gradient). With that memory traffic gone, the
forward + backward of ResNet-50's BatchNorm layers is faster than with
`flax.linen.BatchNorm` (measurements: `benchmarks/batch_norm_bench.py`;
benchmarks/RESULTS.md, "BatchNorm as x a + b"). It is plain autodiff, so
forward mode and forward-over-reverse (the Hessian analyses) keep working,
unlike a `custom_vjp`. The price:
b = beta - mu a cancels against x a when |mu| >> sigma, costing about
log2(|mu| / sigma) bits of the output's float32 precision; the
E[x^2] - mu^2 variance (Flax's default, kept here) already loses twice that
many.
"""

import jax
import jax.numpy as jnp
from jax import lax


def batch_moments(x: jax.Array, axis_name: str | None = None
                  ) -> tuple[jax.Array, jax.Array]:
  """Per-channel mean and biased variance of x over all axes but the last.

  Args:
    x: `(..., C)` features, any float dtype.
    axis_name: a mapped axis (shard_map / pmap) to average the moments over,
      so every device normalises with the statistics of the global batch
      (synchronised BatchNorm); None = this device's batch only.

  Returns:
    (mean, var), each `(C,)` in x's dtype promoted to at least float32;
    var = max(E[x^2] - E[x]^2, 0).
  """
  x = _at_least_float32(x)
  axes = tuple(range(x.ndim - 1))
  moments = jnp.stack([jnp.mean(x, axes), jnp.mean(x * x, axes)])
  if axis_name is not None:
    moments = lax.pmean(moments, axis_name)
  mean = moments[0]
  return mean, jnp.maximum(moments[1] - mean * mean, 0.0)


def normalize(x: jax.Array, mean: jax.Array, var: jax.Array,
              scale: jax.Array, bias: jax.Array, epsilon: float
              ) -> jax.Array:
  """y = x a + b with a = scale / sqrt(var + eps), b = bias - mean a.

  Shapes: x `(..., C)`; mean, var, scale, bias `(C,)`. Returns `(..., C)`
  in x's dtype promoted to at least float32.
  """
  a = scale * lax.rsqrt(var + epsilon)
  b = bias - mean * a
  per_channel = (1,) * (x.ndim - 1) + (-1,)
  return _at_least_float32(x) * a.reshape(per_channel) + b.reshape(
      per_channel)


def _at_least_float32(x: jax.Array) -> jax.Array:
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))
