"""Multi-view evaluation: the crops whose logits are averaged at test time.

fast-MPN-COV evaluates fine-grained models on two views (the centre crop and
its mirror image) and runs a final ImageNet evaluation on torchvision's
`TenCrop` after `Resize(256)` (docs/method.md §8.1), averaging the logits
(not the probabilities) over the views. `eval_views` builds those views in
TensorFlow for the input pipeline; the evaluation step averages the logits.

Synopsis:
  views = eval_views(image, image_size=224, resize_size=256, num_views=10)
  # float32 (10, 224, 224, 3), normalised
"""

from gcp_jax.data.tensorflow_cpu import tf
from gcp_jax.data import preprocess


def five_crops(image: tf.Tensor, size: int) -> tf.Tensor:
  """torchvision `five_crop`: top-left, top-right, bottom-left,
  bottom-right corners and the centre crop, in that order.

  Args:
    image: (H, W, C) with H, W >= size.
    size: side of the square crops.

  Returns:
    (5, size, size, C), the image's dtype.
  """
  shape = tf.shape(image)
  bottom, right = shape[0] - size, shape[1] - size
  corners = [image[top:top + size, left:left + size]
             for top, left in ((0, 0), (0, right), (bottom, 0),
                               (bottom, right))]
  crops = tf.stack(corners + [preprocess.centre_crop(image, size)])
  crops.set_shape([5, size, size, image.shape[-1]])
  return crops


def eval_views(image: tf.Tensor, *, image_size: int, resize_size: int,
               num_views: int) -> tf.Tensor:
  """The evaluation views of one image after `Resize(resize_size)`.

  Args:
    image: uint8 (H, W, 3) or a scalar tf.string of encoded bytes.
    image_size: crop side S.
    resize_size: short side before cropping, >= S.
    num_views: 1 (centre crop), 2 (centre crop, mirrored centre crop) or
      10 (torchvision `TenCrop(S)`: `five_crops` of the image, then
      `five_crops` of its mirror image).

  Returns:
    float32 (num_views, S, S, 3), normalised as `preprocess.normalize`.
  """
  image = tf.convert_to_tensor(image)
  if image.dtype == tf.string:
    image = preprocess.decode_image(image)
  resized = preprocess.resize_short_side(image, resize_size)
  if num_views == 1:
    views = preprocess.centre_crop(resized, image_size)[None]
  elif num_views == 2:
    centre = preprocess.centre_crop(resized, image_size)
    views = tf.stack([centre, tf.image.flip_left_right(centre)])
  elif num_views == 10:
    views = tf.concat([five_crops(resized, image_size),
                       five_crops(tf.image.flip_left_right(resized),
                                  image_size)], axis=0)
  else:
    raise ValueError(f"num_views must be 1, 2 or 10, got {num_views}.")
  return preprocess.normalize(views)
