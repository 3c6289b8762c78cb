"""torchvision's `ColorJitter(brightness, contrast, saturation)` on a PIL
image, as GCP_Optimization's ShuffleNetV2 recipe applies it to the training
crops (docs/method.md §8.1).

Synopsis:
  image = color_jitter(image, seed, (0.4, 0.4, 0.4))  # (H, W, 3) float32

torchvision draws, for each strength x > 0, a factor uniform in
[max(0, 1 - x), 1 + x], and applies the three adjustments in a random
order; on a PIL image they are PIL's `ImageEnhance.Brightness`,
`ImageEnhance.Contrast` and `ImageEnhance.Color`, each rounding to uint8.
Here the adjustments are those of `gcp_jax.data.randaugment` (bit for bit
PIL's); the factors and the order come from a stateless seed, so the
result is a deterministic function of (image, seed). A strength of 0 skips
its adjustment, as torchvision does.
"""

from gcp_jax.data.tensorflow_cpu import tf

from gcp_jax.data import randaugment

# The adjustments, in the index order of `apply_in_order`'s `order`.
ADJUSTMENTS = (randaugment.brightness, randaugment.contrast,
               randaugment.color)


def apply_in_order(image: tf.Tensor, order: tf.Tensor,
                   factors: tf.Tensor) -> tf.Tensor:
  """Applies ADJUSTMENTS[order[0]], then [order[1]], then [order[2]].

  Args:
    image: float32 (H, W, 3), integer values in [0, 255] (a PIL image).
    order: int32 (3,), a permutation of 0..2.
    factors: float32 (3,), the factor of each adjustment (by index); 1 =
      identity.

  Returns:
    float32 (H, W, 3), integer values in [0, 255].
  """
  for step in range(len(ADJUSTMENTS)):
    index = order[step]
    image = tf.switch_case(index, [
        (lambda f=f, i=i: f(image, factors[i]))
        for i, f in enumerate(ADJUSTMENTS)])
  return image


def sample(seed: tf.Tensor, strengths: tuple[float, float, float]
           ) -> tuple[tf.Tensor, tf.Tensor]:
  """(order, factors) of one image: a uniformly random permutation of
  0..2, and factor i uniform in [max(0, 1 - x_i), 1 + x_i] (1 where
  x_i = 0)."""
  order_seed, factor_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  order = tf.argsort(tf.random.stateless_uniform([3], order_seed))
  low = tf.constant([max(0.0, 1.0 - x) for x in strengths], tf.float32)
  high = tf.constant([1.0 + x for x in strengths], tf.float32)
  factors = low + (high - low) * tf.random.stateless_uniform([3],
                                                              factor_seed)
  factors = tf.where(tf.constant([x > 0 for x in strengths]), factors, 1.0)
  return tf.cast(order, tf.int32), factors


def color_jitter(image: tf.Tensor, seed: tf.Tensor,
                 strengths: tuple[float, float, float]) -> tf.Tensor:
  """ColorJitter(brightness, contrast, saturation) = `strengths`.

  Args:
    image: float32 (H, W, 3) in [0, 255], e.g. a resized crop; rounded to
      uint8 values first (the PIL image torchvision's crop returns).
    seed: (2,) int stateless seed.
    strengths: (brightness, contrast, saturation), each >= 0.

  Returns:
    float32 (H, W, 3), integer values in [0, 255].
  """
  order, factors = sample(seed, strengths)
  return apply_in_order(randaugment.quantize(image), order, factors)
