"""RandAugment (timm 0.4.12, DeiT's 'rand-m9-mstd0.5-inc1').

Every op is checked bit for bit against PIL (the library timm's ops call) on
small random images; the geometric ones also against hand-made shifts and
quarter turns. The magnitude -> argument mapping is checked against values
worked out by hand, the policy draw against its op/probability statistics,
and the whole transform for determinism in the seed, eager == tf.data, and
its place in `preprocess.train_image` and `create_datasets`.
"""

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from gcp_jax.data import pipeline, preprocess
from gcp_jax.data import randaugment as ra
from gcp_jax.data.config import (DataError, DataSettings, RandAugmentSpec,
                                 parse_randaugment)
from tests.data.folders import folder_config, write_image

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (21, 26, 3), dtype=np.uint8)  # full range
DULL = RNG.integers(40, 180, (21, 26, 3), dtype=np.uint8)  # narrow range
FILL = (124, 116, 104)
DEIT = "rand-m9-mstd0.5-inc1"


def _ours(function, image, *args, **kwargs) -> np.ndarray:
  out = function(tf.constant(image, tf.float32), *args, **kwargs).numpy()
  assert out.dtype == np.float32 and out.shape == image.shape
  np.testing.assert_array_equal(out, np.round(out))  # uint8 values
  return out.astype(np.int64)


def _solarize_add_reference(image, addition):
  """timm's SolarizeAdd: values below 128 get `addition`, capped at 255."""
  x = image.astype(np.int64)
  return np.where(x < 128, np.minimum(x + addition, 255), x)


PIXEL_CASES = [
    ("autocontrast", ra.auto_contrast, (), ImageOps.autocontrast),
    ("equalize", ra.equalize, (), ImageOps.equalize),
    ("invert", ra.invert, (), ImageOps.invert),
] + [
    (f"posterize{bits}", ra.posterize, (bits,),
     lambda p, b=bits: ImageOps.posterize(p, b)) for bits in (1, 3, 4)
] + [
    # PIL >= 10 refuses 0 bits; timm-era PIL kept none of them: black.
    ("posterize0", ra.posterize, (0,), lambda p: np.asarray(p) & 0),
] + [
    (f"solarize{t}", ra.solarize, (t,),
     lambda p, t=t: ImageOps.solarize(p, t)) for t in (0, 26, 128, 230, 256)
] + [
    (f"{name}{factor}", function, (factor,),
     lambda p, e=enhancer, f=factor: e(p).enhance(f))
    for name, function, enhancer in (
        ("color", ra.color, ImageEnhance.Color),
        ("contrast", ra.contrast, ImageEnhance.Contrast),
        ("brightness", ra.brightness, ImageEnhance.Brightness),
        ("sharpness", ra.sharpness, ImageEnhance.Sharpness))
    for factor in (0.1, 0.19, 0.55, 1.72, 1.81)
]


@pytest.mark.parametrize("image", [IMAGE, DULL], ids=["full", "dull"])
@pytest.mark.parametrize("case", PIXEL_CASES, ids=lambda c: c[0])
def test_pixel_ops_match_pil(case, image):
  _, function, args, reference = case
  expected = np.asarray(reference(Image.fromarray(image))).astype(np.int64)
  np.testing.assert_array_equal(_ours(function, image, *args), expected)


@pytest.mark.parametrize("addition", [0, 50, 99, 110])
def test_solarize_add(addition):
  for image in (IMAGE, DULL):
    np.testing.assert_array_equal(_ours(ra.solarize_add, image, addition),
                                  _solarize_add_reference(image, addition))


def _pil_affine(image, matrix, resample):
  pil = Image.fromarray(image)
  return np.asarray(pil.transform(pil.size, Image.AFFINE, matrix,
                                  resample=resample, fillcolor=FILL))


GEOMETRIC_CASES = [
    (f"rotate{d}", ra.rotate, d,
     lambda x, r, d=d: np.asarray(Image.fromarray(x).rotate(
         d, resample=r, fillcolor=FILL)))
    for d in (27.0, -27.0, 13.3, 90.0)
] + [
    (f"shear_x{f}", ra.shear_x, f,
     lambda x, r, f=f: _pil_affine(x, (1, f, 0, 0, 1, 0), r))
    for f in (0.27, -0.27)
] + [
    (f"shear_y{f}", ra.shear_y, f,
     lambda x, r, f=f: _pil_affine(x, (1, 0, 0, f, 1, 0), r))
    for f in (0.27, -0.27)
] + [
    (f"translate_x{f}", ra.translate_x_rel, f,
     lambda x, r, f=f: _pil_affine(x, (1, 0, f * x.shape[1], 0, 1, 0), r))
    for f in (0.405, -0.405, 0.1)
] + [
    (f"translate_y{f}", ra.translate_y_rel, f,
     lambda x, r, f=f: _pil_affine(x, (1, 0, 0, 0, 1, f * x.shape[0]), r))
    for f in (0.405, -0.1)
]


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("case", GEOMETRIC_CASES, ids=lambda c: c[0])
def test_geometric_ops_match_pil(case, interpolation):
  """Same source points, fill and truncation as PIL's transform."""
  _, function, argument, reference = case
  resample = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
  expected = reference(IMAGE, resample[interpolation]).astype(np.int64)
  np.testing.assert_array_equal(
      _ours(function, IMAGE, argument, interpolation=interpolation),
      expected)


def test_geometric_ops_on_known_shifts_and_turns():
  """Independent of PIL: whole-pixel translations and quarter turns."""
  image = RNG.integers(0, 256, (16, 24, 3), dtype=np.uint8)
  fill = np.broadcast_to(np.array(FILL), (16, 6, 3))
  left = _ours(ra.translate_x_rel, image, 0.25)  # 6 px to the left
  np.testing.assert_array_equal(left[:, :18], image[:, 6:])
  np.testing.assert_array_equal(left[:, 18:], fill)
  right = _ours(ra.translate_x_rel, image, -0.25)
  np.testing.assert_array_equal(right[:, 6:], image[:, :18])
  np.testing.assert_array_equal(right[:, :6], fill)
  up = _ours(ra.translate_y_rel, image, 0.25)  # 4 px up
  np.testing.assert_array_equal(up[:12], image[4:])
  assert (up[12:] == np.array(FILL)).all()
  square = image[:, :16]
  np.testing.assert_array_equal(_ours(ra.rotate, square, 90.0),
                                np.rot90(square))  # counter-clockwise
  np.testing.assert_array_equal(_ours(ra.rotate, square, -90.0),
                                np.rot90(square, -1))
  np.testing.assert_array_equal(_ours(ra.rotate, image, 180.0),
                                image[::-1, ::-1])
  # shear_x by 1 / H: row i's source x is j + 1/2 + (i + 1/2) / 16, so the
  # nearest pixel is column j on the top half and j + 1 on the bottom half.
  sheared = _ours(ra.shear_x, image, 1.0 / 16, interpolation="nearest")
  np.testing.assert_array_equal(sheared[:8], image[:8])
  np.testing.assert_array_equal(sheared[8:, :-1], image[8:, 1:])
  assert (sheared[8:, -1] == np.array(FILL)).all()


def test_fill_is_timm_rounded_imagenet_mean():
  assert ra.FILL_RGB == tuple(float(round(255 * m))
                              for m in preprocess.MEAN_RGB) == FILL


@pytest.mark.parametrize("name,sign,expected", [
    # m9: r = 0.9.
    ("Rotate", 1, 27.0), ("Rotate", -1, -27.0),
    ("ShearX", -1, -0.27), ("ShearY", 1, 0.27),
    ("TranslateXRel", 1, 0.405), ("TranslateYRel", -1, -0.405),
    ("Posterize", 1, 3.0),              # int(3.6)
    ("PosterizeIncreasing", 1, 1.0),    # 4 - 3
    ("Solarize", 1, 230.0),             # int(230.4)
    ("SolarizeIncreasing", 1, 26.0),    # 256 - 230
    ("SolarizeAdd", 1, 99.0),           # int(99.000...01)
    ("Color", 1, 1.72), ("Sharpness", -1, 1.72),  # 1.8 r + 0.1, unsigned
    ("ColorIncreasing", 1, 1.81), ("ContrastIncreasing", -1, 0.19),
    ("BrightnessIncreasing", 1, 1.81), ("SharpnessIncreasing", -1, 0.19),
])
def test_magnitude_arguments_at_m9(name, sign, expected):
  value = ra.magnitude_arguments(name, 9.0, float(sign)).numpy()
  assert value == pytest.approx(expected, abs=1e-12)


def test_magnitude_arguments_at_the_ends():
  def argument(name, level, sign=1.0):
    return float(ra.magnitude_arguments(name, level, sign).numpy())
  assert argument("PosterizeIncreasing", 10.0) == 0.0  # black image
  assert argument("PosterizeIncreasing", 0.0) == 4.0
  assert argument("SolarizeIncreasing", 0.0) == 256.0  # identity
  assert argument("SolarizeIncreasing", 10.0) == 0.0
  assert argument("SolarizeAdd", 10.0) == 110.0
  assert argument("ColorIncreasing", 10.0, -1.0) == pytest.approx(0.1)
  assert argument("ColorIncreasing", 0.0, -1.0) == 1.0
  assert argument("Rotate", 10.0) == 30.0
  assert argument("TranslateXRel", 10.0, -1.0) == -0.45
  for name in ("AutoContrast", "Equalize", "Invert"):
    assert ra.magnitude_arguments(name, 9.0, 1.0) is None


def test_apply_op_clips_the_magnitude_to_0_10():
  x = tf.constant(IMAGE, tf.float32)
  for name in ("Rotate", "SolarizeIncreasing", "ColorIncreasing"):
    np.testing.assert_array_equal(ra.apply_op(x, name, 13.0),
                                  ra.apply_op(x, name, 10.0))
    np.testing.assert_array_equal(ra.apply_op(x, name, -2.0),
                                  ra.apply_op(x, name, 0.0))


def _seed(i):
  return tf.constant([5, i], tf.int64)


def test_rand_augment_is_a_function_of_the_seed():
  spec = parse_randaugment(DEIT)
  x = tf.constant(IMAGE, tf.float32)
  mapped = list(tf.data.Dataset.range(6).map(
      lambda i: ra.rand_augment(x, tf.stack([tf.constant(5, tf.int64), i]),
                                spec)).as_numpy_iterator())
  outputs = []
  for i in range(6):
    eager = ra.rand_augment(x, _seed(i), spec).numpy()
    np.testing.assert_array_equal(eager,
                                  ra.rand_augment(x, _seed(i), spec))
    np.testing.assert_array_equal(eager, mapped[i])
    outputs.append(eager.tobytes())
  assert len(set(outputs)) >= 4  # P(unchanged) per image is about 1/4


def test_zero_layers_only_rounds_to_uint8_values():
  spec = RandAugmentSpec(num_layers=0)
  x = tf.constant(IMAGE, tf.float32) + 0.3
  np.testing.assert_array_equal(ra.rand_augment(x, _seed(0), spec), IMAGE)


def test_policy_draws_ops_uniformly_with_probability_one_half():
  """One layer, fixed magnitude 9: each output is identified as one of the
  15 ops at +-m9 or as the untouched image; about half the images are
  untouched and the ops share the rest about equally."""
  spec = RandAugmentSpec(num_layers=1, magnitude=9, increasing=True)
  num = 600
  outputs = np.stack(list(tf.data.Dataset.range(num).map(
      lambda i: ra.rand_augment(tf.constant(IMAGE, tf.float32),
                                tf.stack([tf.constant(11, tf.int64), i]),
                                spec)).as_numpy_iterator()))
  x = tf.constant(IMAGE, tf.float32)
  candidates = {"none": IMAGE.astype(np.float32)}
  for name in ra.INCREASING_OPS:
    for sign in (1.0, -1.0):
      candidates[name, sign] = ra.apply_op(x, name, 9.0, sign).numpy()
  counts = dict.fromkeys(["none", *ra.INCREASING_OPS], 0)
  signs = []
  for out in outputs:
    matches = [k for k, v in candidates.items() if np.array_equal(out, v)]
    assert matches, "an output is none of the ops at magnitude 9"
    key = matches[0]
    counts["none" if key == "none" else key[0]] += 1
    if key != "none" and key[0] in ("Rotate", "ShearX", "TranslateXRel"):
      signs.append(key[1])
  # Ops that leave IMAGE unchanged (AutoContrast: IMAGE spans 0..255) count
  # as 'none'.
  unchanged = [n for n in ra.INCREASING_OPS
               if np.array_equal(candidates[n, 1.0], IMAGE)]
  expected_none = num * (0.5 + 0.5 * len(unchanged) / 15)
  assert abs(counts["none"] - expected_none) < 4 * np.sqrt(num * 0.25)
  per_op = num * 0.5 / 15  # 20
  for name in ra.INCREASING_OPS:
    if name not in unchanged:
      assert 5 <= counts[name] <= 3 * per_op, (name, counts)
  assert 0.3 < np.mean(np.array(signs) > 0) < 0.7


def test_magnitude_noise_varies_the_strength():
  """mstd 0.5 around m9: rotations by about 27 +- 1.5 degrees."""
  spec = RandAugmentSpec(num_layers=1, magnitude=9, magnitude_std=0.5)
  x = tf.constant(IMAGE, tf.float32)
  fixed = {ra.apply_op(x, n, 9.0, s).numpy().tobytes()
           for n in ra.OPS for s in (1.0, -1.0)}
  outputs = {ra.rand_augment(x, _seed(i), spec).numpy().tobytes()
             for i in range(40)}
  # Most applied ops now differ from every fixed-magnitude output.
  assert len(outputs - fixed - {IMAGE.astype(np.float32).tobytes()}) >= 8


@pytest.mark.parametrize("policy,expected", [
    (DEIT, RandAugmentSpec(2, 9, 0.5, True)),
    ("rand", RandAugmentSpec(2, 10, 0.0, False)),
    ("rand-n3-m5-inc0", RandAugmentSpec(3, 5, 0.0, False)),
    ("rand-mstd1.0-m0", RandAugmentSpec(2, 0, 1.0, False)),
])
def test_parse_randaugment(policy, expected):
  assert parse_randaugment(policy) == expected


@pytest.mark.parametrize("policy", [
    "rand-m9-w0", "augmix-m9", "rand-m", "rand-m9.5", "rand-m11",
    "rand-inc2", "rand-m9-", "rand-mstdx", "rand-mmax12", "m9"])
def test_bad_randaugment_strings_are_data_errors(policy):
  with pytest.raises(DataError, match="data.randaugment"):
    parse_randaugment(policy)
  config = ml_collections.ConfigDict({"randaugment": policy})
  with pytest.raises(DataError, match="data.randaugment"):
    DataSettings.from_config(config)


def test_data_config_keys():
  settings = DataSettings.from_config(ml_collections.ConfigDict())
  assert settings.randaugment_spec is None and settings.random_erasing == 0
  assert not settings.mixing
  settings = DataSettings.from_config(ml_collections.ConfigDict(
      {"randaugment": DEIT, "random_erasing": 0.25, "mixup_alpha": 0.8,
       "cutmix_alpha": 1.0}))
  assert settings.randaugment_spec == parse_randaugment(DEIT)
  assert settings.mixing
  for key, value in (("random_erasing", 1.5), ("mixup_alpha", -0.1),
                     ("mix_prob", 2.0), ("mix_switch_prob", -1.0)):
    with pytest.raises(DataError, match=f"data.{key}"):
      DataSettings.from_config(ml_collections.ConfigDict({key: value}))


def test_train_image_order_crop_randaugment_normalise():
  """augment='none' makes the crop deterministic: the result is
  normalize(rand_augment(centre crop)) with the seed folded with 1."""
  spec = parse_randaugment(DEIT)
  image = tf.constant(RNG.integers(0, 256, (30, 22, 3), dtype=np.uint8))
  for i in range(3):
    seed = _seed(i)
    got = preprocess.train_image(image, seed, augment="none", image_size=16,
                                 resize_size=18, rand_augment=spec)
    crop = preprocess.resize_and_centre_crop(image, image_size=16,
                                             resize_size=18)
    expected = preprocess.normalize(ra.rand_augment(
        crop, tf.random.experimental.stateless_fold_in(seed, 1), spec))
    np.testing.assert_array_equal(got, expected)
  plain = preprocess.train_image(image, seed, augment="inception_crop",
                                 image_size=16, resize_size=18)
  off = preprocess.train_image(image, seed, augment="inception_crop",
                               image_size=16, resize_size=18,
                               rand_augment=None, erasing_probability=0.0)
  np.testing.assert_array_equal(plain, off)


@pytest.fixture(scope="module")
def noise_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("noise_ra")
  rng = np.random.default_rng(3)
  for split, count in (("train", 12), ("val", 2)):
    for i in range(count):
      write_image(str(root / split / f"c{i % 2}" / f"{i}.png"),
                  rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
  return root


def test_pipeline_with_deit_augmentation_is_deterministic(noise_folder):
  """Resumed epochs see bitwise the same RandAugment + erasing batches;
  the extras change the batches only when switched on."""
  config = folder_config(noise_folder, global_batch_size=4,
                         randaugment=DEIT, random_erasing=0.25)
  full = list(pipeline.create_datasets(config).train_batches(1))
  tail = list(pipeline.create_datasets(config).train_batches(1, 2))
  np.testing.assert_array_equal(full[2]["image"], tail[0]["image"])
  plain = list(pipeline.create_datasets(folder_config(
      noise_folder, global_batch_size=4)).train_batches(1))
  assert not np.array_equal(np.stack([b["image"] for b in full]),
                            np.stack([b["image"] for b in plain]))
  for a, b in zip(full, plain):
    np.testing.assert_array_equal(a["label"], b["label"])
