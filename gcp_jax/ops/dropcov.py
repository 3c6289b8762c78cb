"""The pure parts of DropCov (NeurIPS 2022): attention, adaptive rate, dropout.

CNN DropCov (docs/method.md §6.1), in training only:

    s = GAP(x);  a = softmax_c(conv1d_k3(s));  x' = x (1 + a)      (ECA branch)
    p = clamp(1 - (10 / log2 d) mean_b cos(a_b, Sigma'_b 1), 0, 1)  (adaptive rate)
    x'' = channel_dropout(x', p)                                   (Dropout2d)

and then covariance -> triu -> FC with no post-normalisation. At evaluation
the branch and the dropout are skipped.

Synopsis:
  a = channel_attention(x, kernel)          # x: (B, H, W, C), kernel: (3,)
  x = x * (1 + a[:, None, None, :])
  p = adaptive_drop_rate(x, a)              # scalar, no gradient
  x = channel_dropout(key, x, p)
"""

import jax
import jax.numpy as jnp
from jax import lax

from gcp_jax.ops.covariance import covariance
from gcp_jax.ops.linalg import HIGHEST, safe_norm, upcast

# Added to the norms of the cosine, so all-zero features give a rate of 1
# instead of 0/0 (the reference then raises inside Dropout2d).
COSINE_EPS = 1e-12


def channel_attention(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """ECA-style channel weights a = softmax_c(conv1d(GAP(x))).

  The 1-D convolution runs along the channel axis with zero padding
  (k - 1) / 2 and no bias, as DropCov's `eca_layer` (softmax, not sigmoid).

  Args:
    x: (B, H, W, C) features.
    kernel: (k,) weights of the 1-D convolution, k odd (DropCov uses 3).

  Returns:
    (B, C) positive weights summing to 1 over channels, float32.
  """
  x = upcast(x)
  k = kernel.shape[0]
  if k % 2 != 1:
    raise ValueError(f"channel_attention needs an odd kernel size, got {k}.")
  s = jnp.mean(x, axis=(1, 2))                          # (B, C)
  padded = jnp.pad(s, ((0, 0), (k // 2, k // 2)))
  windows = jnp.stack([padded[:, i:i + s.shape[1]] for i in range(k)], -1)
  u = jnp.einsum("bck,k->bc", windows, upcast(kernel), precision=HIGHEST)
  return jax.nn.softmax(u, axis=-1)


def adaptive_drop_rate(x: jax.Array, attention: jax.Array,
                       axis_name: str | None = None) -> jax.Array:
  """p = clamp(1 - (10 / log2 d) * mean_b cos(a_b, Sigma_b 1), 0, 1).

  Sigma_b is the covariance of the (attention-modulated) features of sample
  b, Sigma_b 1 its row sums, d the number of channels. The rate carries no
  gradient (the reference takes `.item()`) and never leaves the device.

  Args:
    x: (B, H, W, C) features x' after the attention residual.
    attention: (B, C) the weights a.
    axis_name: if set, the batch mean of the cosine is also averaged over
      this mapped axis (global batch); if None it is the per-device mean,
      which is what the reference computes under DataParallel.

  Returns:
    A float32 scalar in [0, 1].
  """
  row_sums = jnp.sum(covariance(x), axis=-1)                  # (B, C)
  a = upcast(attention)
  cos = jnp.sum(a * row_sums, -1) / (
      (safe_norm(a, -1) + COSINE_EPS) * (safe_norm(row_sums, -1) + COSINE_EPS))
  mean_cos = jnp.mean(cos)
  if axis_name is not None:
    mean_cos = lax.pmean(mean_cos, axis_name)
  d = x.shape[-1]
  return lax.stop_gradient(jnp.clip(1.0 - 10.0 / jnp.log2(d) * mean_cos,
                                    0.0, 1.0))


def structured_dropout(key: jax.Array, x: jax.Array, rate: jax.Array | float,
                       mask_shape: tuple[int, ...]) -> jax.Array:
  """Inverted dropout with a mask of `mask_shape` broadcast over `x`.

  Entries of the mask are kept with probability 1 - p and survivors are
  scaled by 1 / (1 - p); p = 1 gives zeros. The rate may be traced: written by
  hand because `flax.linen.Dropout` branches in Python on the rate, which
  fails for a rate computed under `jit`.

  Args:
    key: PRNG key.
    x: any shape.
    rate: scalar p in [0, 1].
    mask_shape: broadcastable to x.shape, same rank (1 = shared axis).

  Returns:
    Same shape and dtype as x.
  """
  rate = jnp.asarray(rate, jnp.float32)
  keep = 1.0 - rate
  mask = jax.random.bernoulli(key, keep, mask_shape)
  scale = jnp.where(keep > 0.0, 1.0 / jnp.where(keep > 0.0, keep, 1.0), 0.0)
  return x * (mask * scale).astype(x.dtype)


def channel_dropout(key: jax.Array, x: jax.Array,
                    rate: jax.Array | float) -> jax.Array:
  """Drops whole channel maps per sample (PyTorch `Dropout2d`), traced rate.

  Args:
    key: PRNG key.
    x: (B, H, W, C).
    rate: scalar p in [0, 1], may be traced.

  Returns:
    (B, H, W, C): each (sample, channel) map kept with probability 1 - p and
    scaled by 1 / (1 - p).
  """
  return structured_dropout(key, x, rate, (x.shape[0], 1, 1, x.shape[-1]))
