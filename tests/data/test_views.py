"""Multi-view evaluation crops against numpy slicing of the same image."""

import numpy as np
import pytest

from gcp_jax.data import pipeline, preprocess, views
from tests.data.folders import folder_config, write_id_folder, write_image


def _normalised(pixels: np.ndarray) -> np.ndarray:
  return (pixels / 255.0 - np.array(preprocess.MEAN_RGB)) / np.array(
      preprocess.STDDEV_RGB)


@pytest.fixture(scope="module")
def ramp_image():
  """uint8 (12, 17, 3) with distinct pixels; its short side is 12, so a
  resize to 12 leaves it unchanged and the crops are plain slices."""
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)


def test_resize_to_the_same_short_side_is_identity(ramp_image):
  out = preprocess.resize_short_side(ramp_image, 12).numpy()
  np.testing.assert_allclose(out, ramp_image, atol=1e-4)


def test_ten_crop_is_torchvision_order(ramp_image):
  """TenCrop(8): corners tl, tr, bl, br, centre (offset round(2), round(
  4.5) = 4 half-to-even), then the same of the mirrored image."""
  got = views.eval_views(ramp_image, image_size=8, resize_size=12,
                         num_views=10).numpy()
  x = ramp_image.astype(np.float64)
  def five(img):
    return [img[:8, :8], img[:8, -8:], img[-8:, :8], img[-8:, -8:],
            img[2:10, 4:12]]
  want = np.stack(five(x) + five(x[:, ::-1]))
  np.testing.assert_allclose(got, _normalised(want), atol=1e-4)


def test_two_views_are_centre_and_mirror(ramp_image):
  got = views.eval_views(ramp_image, image_size=8, resize_size=12,
                         num_views=2).numpy()
  centre = ramp_image[2:10, 4:12].astype(np.float64)
  np.testing.assert_allclose(got[0], _normalised(centre), atol=1e-4)
  np.testing.assert_allclose(got[1], _normalised(centre[:, ::-1]), atol=1e-4)


def test_one_view_equals_eval_image(ramp_image):
  got = views.eval_views(ramp_image, image_size=8, resize_size=12,
                         num_views=1).numpy()
  want = preprocess.eval_image(ramp_image, image_size=8,
                               resize_size=12).numpy()
  np.testing.assert_array_equal(got[0], want)


def test_pipeline_yields_views_and_pads_them(tmp_path, ramp_image):
  write_id_folder(str(tmp_path), {"a": 8, "b": 8}, {"a": 2, "b": 1})
  write_image(str(tmp_path / "val" / "b" / "ramp.png"), ramp_image)
  config = folder_config(tmp_path, image_size=8, resize_size=12,
                         eval_batch_size=8, eval_views=10)
  batches = list(pipeline.create_datasets(config).eval_batches())
  assert len(batches) == 1
  batch = batches[0]
  assert batch["image"].shape == (8, 10, 8, 8, 3)
  np.testing.assert_array_equal(batch["mask"], [1] * 4 + [0] * 4)
  assert (batch["image"][4:] == 0).all()
  ramp_views = views.eval_views(ramp_image, image_size=8, resize_size=12,
                                num_views=10).numpy()
  np.testing.assert_allclose(batch["image"][3], ramp_views, atol=1e-5)


def test_unsupported_view_count_is_named(tmp_path):
  write_id_folder(str(tmp_path), {"a": 8}, {"a": 1})
  with pytest.raises(pipeline.DataError, match="eval_views=5"):
    pipeline.create_datasets(folder_config(tmp_path, eval_views=5))
