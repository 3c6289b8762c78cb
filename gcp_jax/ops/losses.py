"""Classification losses shared by training and the analyses.

  smoothed_targets(labels (B,), K, eps, style) -> (B, K)
  cross_entropy(logits (B, K), labels (B,), eps, style) -> (B,)
  soft_target_cross_entropy(logits (B, K), targets (B, K)) -> (B,)
"""

import jax
import jax.numpy as jnp


SMOOTHING_STYLES = ("uniform", "others")


def smoothed_targets(labels: jax.Array, num_classes: int,
                     label_smoothing: float, style: str = "uniform"
                     ) -> jax.Array:
  """Target distributions (B, K) of integer labels (B,), smoothed by eps:

    "uniform"  t = (1 - eps) one_hot(y) + eps / K: the true class gets
               1 - eps + eps / K (PyTorch's `label_smoothing`, timm);
    "others"   t = (1 - eps) one_hot(y) + eps / (K - 1) (1 - one_hot(y)):
               the true class gets exactly 1 - eps, every other class
               eps / (K - 1) (MindSpore's `CrossEntropySmooth`, the TPAMI
               seed's loss; docs/method.md §8.2).
  """
  if style not in SMOOTHING_STYLES:
    raise ValueError(f"Unknown label smoothing style {style!r}; use one of "
                     f"{', '.join(SMOOTHING_STYLES)}.")
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if not label_smoothing:
    return one_hot
  if style == "uniform":
    return (1.0 - label_smoothing) * one_hot + label_smoothing / num_classes
  return ((1.0 - label_smoothing) * one_hot
          + label_smoothing / (num_classes - 1) * (1.0 - one_hot))


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  label_smoothing: float = 0.0,
                  smoothing_style: str = "uniform") -> jax.Array:
  """Per-example cross-entropy -sum_k t_k log softmax(z)_k with the
  targets t of `smoothed_targets`.

  Args:
    logits: (B, K) any float dtype; the log-softmax runs in float32.
    labels: (B,) integer class indices.
    label_smoothing: eps in [0, 1).
    smoothing_style: "uniform" or "others" (`smoothed_targets`).

  Returns:
    (B,) float32 losses.
  """
  return soft_target_cross_entropy(logits, smoothed_targets(
      labels, logits.shape[-1], label_smoothing, smoothing_style))


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
