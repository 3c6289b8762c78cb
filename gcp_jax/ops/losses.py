"""Classification losses shared by training and the analyses.

  cross_entropy(logits (B, K), labels (B,), label_smoothing) -> (B,)
  soft_target_cross_entropy(logits (B, K), targets (B, K)) -> (B,)
"""

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example cross-entropy -sum_k t_k log softmax(z)_k with targets
  t = (1 - eps) one_hot(y) + eps / K (PyTorch's `label_smoothing=eps`).

  Args:
    logits: (B, K) any float dtype; the log-softmax runs in float32.
    labels: (B,) integer class indices.
    label_smoothing: eps in [0, 1).

  Returns:
    (B,) float32 losses.
  """
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  if label_smoothing:
    targets = (1.0 - label_smoothing) * targets + (
        label_smoothing / logits.shape[-1])
  return soft_target_cross_entropy(logits, targets)


def soft_target_cross_entropy(logits: jax.Array, targets: jax.Array
                              ) -> jax.Array:
  """-sum_k t_k log softmax(z)_k for given target distributions (mixup /
  CutMix targets; timm's SoftTargetCrossEntropy).

  Args:
    logits: (B, K) any float dtype; the log-softmax runs in float32.
    targets: (B, K) rows summing to 1.

  Returns:
    (B,) float32 losses.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(targets.astype(jnp.float32) * log_probs, axis=-1)
