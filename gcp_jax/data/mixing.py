"""Mixup and CutMix on device, as timm 0.4.12's `Mixup` in 'batch' mode.

Pure `jax.numpy` functions for the train step (DeiT recipe, docs/method.md §8.1:
mixup alpha 0.8, CutMix alpha 1.0, prob 1.0, switch prob 0.5, label smoothing
0.1). One draw per batch: with probability `prob` the batch is
mixed; CutMix is chosen with probability `switch_prob` when both alphas are
positive (otherwise whichever is positive); lambda ~ Beta(alpha, alpha) of
the chosen method. Image b is paired with image B - 1 - b (the batch
flipped):

  mixup   x'_b = lam x_b + (1 - lam) x_{B-1-b}
  CutMix  x'_b = x_b with a box pasted from x_{B-1-b}. The box has sides
          int(H sqrt(1 - lam)), int(W sqrt(1 - lam)) halved and doubled
          again around a uniform centre (cy, cx) in [0, H) x [0, W), clipped
          to the image; lam is then corrected to 1 - (box area) / (H W),
          the fraction of each image that is still its own.
  targets y'_b = lam t(y_b) + (1 - lam) t(y_{B-1-b}), t = one-hot with
          label smoothing folded in: 1 - s + s / K on the label, s / K
          elsewhere.

The targets are soft (rows sum to 1): train with
`optax.softmax_cross_entropy(logits, targets)` (timm's
SoftTargetCrossEntropy) and do not smooth the labels a second time.

Under `jax.shard_map` each device mixes its own slice of the global batch,
so pairs are formed within a device's slice (b with B_local - 1 - b), not
across the global batch; with one key per device (fold in
`lax.axis_index`) the devices draw independent lambdas, as timm's
data-parallel processes do with their own random states. timm requires an
even batch; here with an odd batch the middle image is paired with itself.

Synopsis:
  images, targets = mix_batch(key, batch["image"], batch["label"], K,
                              mixup_alpha=0.8, cutmix_alpha=1.0)
  loss = optax.softmax_cross_entropy(logits, targets).mean()
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["MixParams", "sample_mix", "apply_mix", "mix_batch",
           "smooth_one_hot"]

# Which mixing a batch gets (`MixParams.mode`).
NO_MIX, MIXUP, CUTMIX = 0, 1, 2


class MixParams(NamedTuple):
  """One batch's mixing draw (`sample_mix`).

  Attributes:
    mode: int32 scalar: NO_MIX (0), MIXUP (1) or CUTMIX (2).
    lam: float32 scalar, the weight of each image's own content and label;
      for CutMix corrected to the box actually pasted; 1 for NO_MIX.
    box: int32 (4,) [top, bottom, left, right] of the pasted rows
      [top, bottom) and columns [left, right); empty unless CUTMIX.
  """
  mode: jax.Array
  lam: jax.Array
  box: jax.Array


def sample_mix(key: jax.Array, height: int, width: int, *,
               mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
               prob: float = 1.0, switch_prob: float = 0.5) -> MixParams:
  """Draws timm's per-batch mixing parameters (module docstring).

  Args:
    key: PRNG key.
    height: image height H.
    width: image width W.
    mixup_alpha: Beta parameter of mixup (Python number); 0 = no mixup.
    cutmix_alpha: Beta parameter of CutMix (Python number); 0 = no CutMix.
    prob: probability that the batch is mixed at all.
    switch_prob: probability of CutMix when both alphas are positive.

  Returns:
    The `MixParams`. Both alphas 0 (or prob 0) gives NO_MIX with lam 1.
  """
  mix_key, switch_key, mixup_key, cutmix_key, y_key, x_key = (
      jax.random.split(key, 6))
  use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
  no_mix = MixParams(jnp.int32(NO_MIX), jnp.float32(1.0),
                     jnp.zeros(4, jnp.int32))
  if not (use_mixup or use_cutmix) or prob <= 0:
    return no_mix
  if use_mixup and use_cutmix:
    cutmix = jax.random.uniform(switch_key) < switch_prob
  else:
    cutmix = jnp.bool_(use_cutmix)
  lam_mixup = (jax.random.beta(mixup_key, mixup_alpha, mixup_alpha)
               if use_mixup else jnp.float32(1.0))
  lam_cutmix = (jax.random.beta(cutmix_key, cutmix_alpha, cutmix_alpha)
                if use_cutmix else jnp.float32(1.0))
  # The CutMix box of lam_cutmix and the lambda of its true area.
  ratio = jnp.sqrt(1.0 - lam_cutmix.astype(jnp.float32))
  half_h = jnp.floor(height * ratio).astype(jnp.int32) // 2
  half_w = jnp.floor(width * ratio).astype(jnp.int32) // 2
  centre_y = jax.random.randint(y_key, (), 0, height)
  centre_x = jax.random.randint(x_key, (), 0, width)
  box = jnp.stack([jnp.clip(centre_y - half_h, 0, height),
                   jnp.clip(centre_y + half_h, 0, height),
                   jnp.clip(centre_x - half_w, 0, width),
                   jnp.clip(centre_x + half_w, 0, width)])
  box_area = (box[1] - box[0]) * (box[3] - box[2])
  lam_box = 1.0 - box_area.astype(jnp.float32) / (height * width)
  mixed = MixParams(
      jnp.where(cutmix, CUTMIX, MIXUP).astype(jnp.int32),
      jnp.where(cutmix, lam_box, lam_mixup).astype(jnp.float32),
      jnp.where(cutmix, box, 0).astype(jnp.int32))
  if prob >= 1:
    return mixed
  apply = jax.random.uniform(mix_key) < prob
  return jax.tree.map(lambda m, n: jnp.where(apply, m, n), mixed, no_mix)


def smooth_one_hot(labels: jax.Array, num_classes: int,
                   label_smoothing: float = 0.0) -> jax.Array:
  """One-hot targets with smoothing s: 1 - s + s / K on the label, s / K
  elsewhere (timm's `one_hot` with on/off values).

  Args:
    labels: int (B,).
    num_classes: K.
    label_smoothing: s in [0, 1).

  Returns:
    float32 (B, K), rows summing to 1.
  """
  off = label_smoothing / num_classes
  return jax.nn.one_hot(labels, num_classes) * (1.0 - label_smoothing) + off


def apply_mix(params: MixParams, images: jax.Array, labels: jax.Array,
              num_classes: int, *, label_smoothing: float = 0.1
              ) -> tuple[jax.Array, jax.Array]:
  """Mixes a batch with its flipped self as `params` say.

  Args:
    params: from `sample_mix` for this image size.
    images: (B, H, W, C), any float dtype (kept).
    labels: int (B,).
    num_classes: K.
    label_smoothing: folded into the soft targets.

  Returns:
    (images (B, H, W, C), targets float32 (B, K)); NO_MIX returns the
    images unchanged and smoothed one-hot targets.
  """
  flipped = images[::-1]
  lam = params.lam

  def mixup(x):
    lam_x = lam.astype(x.dtype)
    return lam_x * x + (1 - lam_x) * flipped

  def cutmix(x):
    top, bottom, left, right = params.box
    rows = jnp.arange(x.shape[1])
    columns = jnp.arange(x.shape[2])
    inside = (((rows >= top) & (rows < bottom))[:, None]
              & ((columns >= left) & (columns < right))[None, :])
    return jnp.where(inside[None, :, :, None], flipped, x)

  mixed = jax.lax.switch(params.mode, [lambda x: x, mixup, cutmix], images)
  targets = smooth_one_hot(labels, num_classes, label_smoothing)
  targets = lam * targets + (1.0 - lam) * targets[::-1]
  return mixed, targets


def mix_batch(key: jax.Array, images: jax.Array, labels: jax.Array,
              num_classes: int, *, mixup_alpha: float = 0.8,
              cutmix_alpha: float = 1.0, prob: float = 1.0,
              switch_prob: float = 0.5, label_smoothing: float = 0.1
              ) -> tuple[jax.Array, jax.Array]:
  """timm 'batch'-mode Mixup/CutMix: `sample_mix` then `apply_mix`.

  Jit-compatible; `num_classes` and the keyword arguments must be Python
  numbers (static), only `key`, `images` and `labels` may be traced.

  Args:
    key: PRNG key (one per batch; per device under shard_map).
    images: (B, H, W, C) float, normalised.
    labels: int (B,).
    num_classes: K.
    mixup_alpha: Beta parameter of mixup; 0 = no mixup.
    cutmix_alpha: Beta parameter of CutMix; 0 = no CutMix.
    prob: probability that the batch is mixed.
    switch_prob: probability of CutMix rather than mixup when both are on.
    label_smoothing: folded into the targets.

  Returns:
    (mixed images, same shape and dtype; soft targets float32 (B, K)).
  """
  params = sample_mix(key, images.shape[1], images.shape[2],
                      mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
                      prob=prob, switch_prob=switch_prob)
  return apply_mix(params, images, labels, num_classes,
                   label_smoothing=label_smoothing)
