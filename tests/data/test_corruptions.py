"""The imagecorruptions shim and seeding: equal to the library's own output
for a fixed numpy seed (the shimmed corruptions against the library run
with the removed numpy / skimage names put back by the test)."""

import numpy as np
import pytest
import skimage.filters

from gcp_jax.data import corruptions
from gcp_jax.data.config import DataError


@pytest.fixture(scope="module")
def images():
  rng = np.random.default_rng(0)
  # Smooth-ish content (a gradient plus noise), 40 x 48, two images.
  base = np.linspace(0, 255, 48)[None, :, None] * np.ones((40, 1, 3))
  return [np.uint8(np.clip(base + rng.normal(0, 20, base.shape), 0, 255))
          for _ in range(2)]


def _library_output(image, name, severity, seed):
  lib = corruptions.library()
  np.random.seed(seed)
  return lib.corrupt(image, severity=severity, corruption_name=name)


@pytest.mark.parametrize("name", ["gaussian_noise", "motion_blur",
                                  "frost", "spatter"])
def test_equals_library_for_a_fixed_seed(images, name):
  for index, image in enumerate(images):
    seed = corruptions.image_seed(7, name, 3, index)
    np.testing.assert_array_equal(
        corruptions.corrupt(image, name, 3, seed),
        _library_output(image, name, 3, seed))


def test_seeded_output_is_reproducible_and_keeps_global_rng(images):
  np.random.seed(123)
  before = np.random.get_state()[1].copy()
  a = corruptions.corrupt(images[0], "shot_noise", 2, seed=5)
  np.testing.assert_array_equal(np.random.get_state()[1], before)
  np.testing.assert_array_equal(
      a, corruptions.corrupt(images[0], "shot_noise", 2, seed=5))
  assert not np.array_equal(
      a, corruptions.corrupt(images[0], "shot_noise", 2, seed=6))
  assert corruptions.image_seed(0, "fog", 1, 3) != corruptions.image_seed(
      0, "fog", 1, 4)


def test_fog_equals_library_with_numpy_float_alias_restored(images,
                                                            monkeypatch):
  ours = corruptions.corrupt(images[0], "fog", 4, seed=11)
  # The library itself, on a numpy that has float_ again (global, test
  # only): the shim must not change what fog computes.
  monkeypatch.setattr(np, "float_", np.float64, raising=False)
  module = corruptions.library().corruptions
  monkeypatch.setattr(module, "np", np)
  np.testing.assert_array_equal(ours, _library_output(images[0], "fog", 4,
                                                      11))


@pytest.mark.parametrize("name", ["glass_blur", "gaussian_blur"])
def test_blurs_equal_library_with_skimage_multichannel_restored(
    images, name, monkeypatch):
  ours = corruptions.corrupt(images[1], name, 2, seed=3)

  def old_gaussian(image, sigma, multichannel=False, **kwargs):
    # skimage < 0.19's signature: multichannel=True is channel_axis=-1.
    return skimage.filters.gaussian(
        image, sigma=sigma, channel_axis=-1 if multichannel else None,
        **kwargs)
  module = corruptions.library().corruptions
  monkeypatch.setattr(module, "gaussian", old_gaussian)
  np.testing.assert_array_equal(ours, _library_output(images[1], name, 2, 3))


def test_gaussian_blur_by_its_formula(images):
  # imagecorruptions' gaussian_blur at severity 2: sigma 2, then clip*255.
  expected = np.uint8(np.clip(skimage.filters.gaussian(
      images[0] / 255.0, sigma=2, channel_axis=-1), 0, 1) * 255)
  np.testing.assert_array_equal(
      corruptions.corrupt(images[0], "gaussian_blur", 2, seed=0), expected)


def test_every_corruption_runs(images):
  for name in corruptions.ALL_CORRUPTIONS:
    out = corruptions.corrupt(images[0][:32, :32], name, 5, seed=1)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_bad_names_severities_and_sizes_are_one_line_errors(images):
  with pytest.raises(DataError, match="Unknown corruption 'fgo'"):
    corruptions.corrupt(images[0], "fgo", 1, 0)
  with pytest.raises(DataError, match="Severity 6 is not one of 1..5"):
    corruptions.corrupt(images[0], "fog", 6, 0)
  with pytest.raises(DataError, match="at least 32 pixels"):
    corruptions.corrupt(images[0][:16, :16], "fog", 1, 0)
