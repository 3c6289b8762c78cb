"""ImageNet-C corruptions of decoded images, through the `imagecorruptions`
package (the ImageNet-C authors' code, packaged), with a minimal
compatibility shim and reproducible seeding. Nothing here re-implements a
corruption.

Synopsis:
  corrupted = corrupt(image, "fog", 3, seed=image_seed(0, "fog", 3, 17))
  # uint8 (H, W, 3), H, W >= 32; equals np.random.seed(s) followed by
  # imagecorruptions.corrupt(image, severity=3, corruption_name="fog")

The shim (docs/design.md, 'Corruptions: the imagecorruptions shim').
imagecorruptions 1.1.2 predates numpy 2, scikit-image 0.19+ and setuptools
81+; three of its 19 corruptions and its import fail on current versions:
  * `glass_blur` and `gaussian_blur` call skimage's `gaussian(...,
    multichannel=True)`, an argument removed in favour of `channel_axis`;
  * `fog` builds its plasma fractal with `np.float_`, removed in numpy 2;
  * the module imports `pkg_resources.resource_filename` (for the frost
    pictures), gone with setuptools 81.
The fixes are scoped to the library's own module: its `gaussian` name is
rebound to a wrapper that turns `multichannel=True` into `channel_axis=-1`,
and its `np` name to a view of numpy that also has `float_` (= float64);
numpy and skimage themselves are not touched. If pkg_resources is missing,
a stand-in module with `resource_filename` is present only while the
library is imported. Each corruption computes what it computed with the
versions it was written for.

Seeding. The library draws from numpy's global RNG. `corrupt` seeds it
with an explicit seed (and restores the previous global state after), so
an image's corruption is a function of that seed only; `image_seed` derives
the seed from (seed, corruption, severity, image index).
"""

import contextlib
import functools
import importlib.util
import os
import sys
import threading
import types

import numpy as np

from gcp_jax.data.config import DataError

# The 15 corruptions of the benchmark and the 4 extra ("validation") ones,
# in the library's order (also `gcp_jax.analysis.robustness_metrics`).
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise",
               "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
               "snow", "frost", "fog", "brightness", "contrast",
               "elastic_transform", "pixelate", "jpeg_compression")
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter",
                     "saturate")
ALL_CORRUPTIONS = CORRUPTIONS + EXTRA_CORRUPTIONS
MIN_SIDE = 32   # the library refuses smaller images

_LOCK = threading.Lock()   # numpy's global RNG is shared state


def check_corruption_names(names, severities) -> None:
  """DataError naming the first unknown corruption or bad severity."""
  for name in names:
    if name not in ALL_CORRUPTIONS:
      raise DataError(
          f"Unknown corruption {name!r}; choose from "
          f"{', '.join(ALL_CORRUPTIONS)} (config.robustness.corruptions).")
  for severity in severities:
    if severity not in (1, 2, 3, 4, 5):
      raise DataError(f"Severity {severity!r} is not one of 1..5; fix "
                      f"config.robustness.severities.")


class _NumpyWithFloat_(types.ModuleType):
  """numpy, plus the `float_` alias numpy 2 removed."""
  float_ = np.float64

  def __getattr__(self, name):
    return getattr(np, name)


def _gaussian_with_channel_axis(gaussian):
  @functools.wraps(gaussian)
  def wrapped(image, *args, multichannel=None, **kwargs):
    if multichannel:
      kwargs.setdefault("channel_axis", -1)
    return gaussian(image, *args, **kwargs)
  return wrapped


@contextlib.contextmanager
def _pkg_resources_stand_in():
  """A `pkg_resources` with only `resource_filename`, while it is missing
  (setuptools >= 81); removed again afterwards."""
  if importlib.util.find_spec("pkg_resources") is not None:
    yield
    return
  stand_in = types.ModuleType("pkg_resources")

  def resource_filename(package, name):
    return os.path.join(os.path.dirname(sys.modules[package].__file__),
                        name)
  stand_in.resource_filename = resource_filename
  sys.modules["pkg_resources"] = stand_in
  try:
    yield
  finally:
    sys.modules.pop("pkg_resources", None)


@functools.cache
def library():
  """The `imagecorruptions` package with the shim applied (once)."""
  try:
    with _pkg_resources_stand_in():
      import imagecorruptions
      from imagecorruptions import corruptions as module
  except ImportError as error:
    raise DataError(
        f"On-the-fly corruption needs the imagecorruptions package "
        f"({error}); pip install -r requirements.txt or -e "
        f"'.[robustness]'.") from error
  if not isinstance(module.np, _NumpyWithFloat_) and not hasattr(
      module.np, "float_"):
    module.np = _NumpyWithFloat_("numpy")
  if not getattr(module.gaussian, "_gcp_jax_shim", False):
    module.gaussian = _gaussian_with_channel_axis(module.gaussian)
    module.gaussian._gcp_jax_shim = True
  return imagecorruptions


def image_seed(seed: int, corruption: str, severity: int,
               index: int) -> int:
  """The 32-bit numpy seed of one image's corruption: a function of
  (seed, corruption, severity, index in the evaluation set) only."""
  return int(np.random.SeedSequence(
      [seed, ALL_CORRUPTIONS.index(corruption), severity, index]
  ).generate_state(1)[0])


def corrupt(image: np.ndarray, corruption: str, severity: int,
            seed: int) -> np.ndarray:
  """`imagecorruptions.corrupt` of a uint8 (H, W, 3) image, numpy's global
  RNG seeded with `seed` (its previous state is restored afterwards).

  Returns:
    uint8 (H, W, 3).
  """
  check_corruption_names([corruption], [severity])
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"Need a uint8 (H, W, 3) image, got {image.dtype} "
                     f"{image.shape}.")
  if min(image.shape[:2]) < MIN_SIDE:
    raise DataError(
        f"Images of {image.shape[0]} x {image.shape[1]} are too small to "
        f"corrupt: imagecorruptions needs at least {MIN_SIDE} pixels a "
        f"side; set data.image_size >= {MIN_SIDE}.")
  lib = library()
  with _LOCK:
    state = np.random.get_state()
    try:
      np.random.seed(seed)
      out = lib.corrupt(image, severity=severity,
                        corruption_name=corruption)
    finally:
      np.random.set_state(state)
  return out
