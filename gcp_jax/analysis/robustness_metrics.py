"""Corruption robustness metrics of ImageNet-C and ImageNet-P (Hendrycks &
Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", ICLR 2019), in plain numpy; the equations are in
docs/method.md §12.

Synopsis:
  errors = {"gaussian_noise": {1: 0.31, 2: 0.40, ...}, ...}  # top-1 error
  ce = corruption_errors(errors)                  # {corruption: CE_c}
  summary = summarize(errors, clean_error=0.24)   # mCE, relative mCE, ...
  fp = flip_probability(predictions, noise=False)  # ImageNet-P, (m, n)
  t5d = top5_distance(logits, noise=False)         # (m, n, classes)

Errors are fractions in [0, 1]; CE and mCE are ratios (1.0 = AlexNet).
"""

from collections.abc import Mapping

import numpy as np

# The 15 ImageNet-C corruptions that define mCE, in the paper's order
# (noise, blur, weather, digital).
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise",
               "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
               "snow", "frost", "fog", "brightness",
               "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
# The 4 held-out ("validation") corruptions; reported, never in mCE.
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter",
                     "saturate")
SEVERITIES = (1, 2, 3, 4, 5)

# AlexNet's top-1 error on ImageNet-C, averaged over the 5 severities, per
# corruption: the normaliser of CE. Source: the ImageNet-C authors' values
# (github.com/hendrycks/robustness; the same list is `ALEXNET_ERR` in the
# AugMix code, github.com/google-research/augmix, imagenet.py). Because CE
# divides sums over the same 5 severities, the mean is as good as the sum.
# The 4 extra corruptions have no published AlexNet errors we can cite, so
# they get unnormalised errors only.
ALEXNET_ERRORS = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468,
    "impulse_noise": 0.922640, "defocus_blur": 0.819880,
    "glass_blur": 0.826268, "motion_blur": 0.785948,
    "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572,
    "fog": 0.819324, "brightness": 0.564592, "contrast": 0.853204,
    "elastic_transform": 0.646056, "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}
# AlexNet's clean top-1 error on the ImageNet validation set, the baseline
# of relative CE: 1 - 0.56522, torchvision's published top-1 accuracy of
# the pretrained AlexNet the ImageNet-C authors evaluated (the paper's
# Table 1 rounds it to 43.5 %).
ALEXNET_CLEAN_ERROR = 0.43478


def top1_error(logits: np.ndarray, labels: np.ndarray,
               mask: np.ndarray | None = None) -> float:
  """Fraction of (unmasked) examples whose arg-max is not the label."""
  logits, labels = np.asarray(logits), np.asarray(labels)
  wrong = (np.argmax(logits, axis=-1) != labels).astype(np.float64)
  mask = np.ones_like(wrong) if mask is None else np.asarray(mask, float)
  return float(np.sum(wrong * mask) / np.sum(mask))


def _check(errors: Mapping[str, Mapping[int, float]],
           corruptions: tuple[str, ...]) -> None:
  for name in corruptions:
    if name not in errors:
      raise ValueError(f"No errors of corruption {name!r}; got "
                       f"{sorted(errors)}.")
    missing = [s for s in SEVERITIES if s not in errors[name]]
    if missing:
      raise ValueError(f"Corruption {name!r} lacks severities {missing}; "
                       f"CE needs all of {list(SEVERITIES)}.")


def corruption_errors(errors: Mapping[str, Mapping[int, float]],
                      corruptions: tuple[str, ...] = CORRUPTIONS,
                      baseline: Mapping[str, float] = ALEXNET_ERRORS,
                      ) -> dict[str, float]:
  """CE_c = sum_s E_{s,c} / sum_s E^base_{s,c} for each corruption c.

  Args:
    errors: {corruption: {severity 1..5: top-1 error}}.
    corruptions: which to normalise (each needs a baseline value).
    baseline: {corruption: the baseline model's error averaged over the 5
      severities}; AlexNet's (ImageNet-C) by default, or e.g. a GAP model's
      (`mean_errors`) to compare heads on another data set.
  """
  return {c: e / baseline[c]
          for c, e in mean_errors(errors, corruptions).items()}


def relative_corruption_errors(errors: Mapping[str, Mapping[int, float]],
                               clean_error: float,
                               corruptions: tuple[str, ...] = CORRUPTIONS,
                               baseline: Mapping[str, float] = ALEXNET_ERRORS,
                               baseline_clean_error: float = (
                                   ALEXNET_CLEAN_ERROR),
                               ) -> dict[str, float]:
  """Relative CE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^base_{s,c} -
  E^base_clean): the degradation under c, relative to the baseline's
  (AlexNet's by default; `baseline` as in `corruption_errors`)."""
  return {c: (e - clean_error) / (baseline[c] - baseline_clean_error)
          for c, e in mean_errors(errors, corruptions).items()}


def mean_errors(errors: Mapping[str, Mapping[int, float]],
                corruptions: tuple[str, ...]) -> dict[str, float]:
  """{c: E_c averaged over the 5 severities}: a model's errors in the form
  `corruption_errors` takes as a baseline."""
  _check(errors, corruptions)
  return {c: float(np.mean([errors[c][s] for s in SEVERITIES]))
          for c in corruptions}


def summarize(errors: Mapping[str, Mapping[int, float]],
              clean_error: float | None = None) -> dict:
  """Every ImageNet-C number of a set of per-cell errors.

  Returns:
    {'mean_error': {corruption: mean over severities} (all present),
     'severity_error': {severity: mean over the present corruptions},
     'ce', 'mce' (if all 15 corruptions are present, else None),
     'relative_ce', 'relative_mce' (also needs clean_error),
     'clean_error'}.
  """
  present = [c for c in CORRUPTIONS + EXTRA_CORRUPTIONS if c in errors]
  present += sorted(c for c in errors if c not in present)
  result = {
      "clean_error": clean_error,
      "mean_error": {c: float(np.mean(list(errors[c].values())))
                     for c in present},
      "severity_error": {
          s: float(np.mean([errors[c][s] for c in present
                            if s in errors[c]]))
          for s in SEVERITIES if any(s in errors[c] for c in present)},
      "ce": None, "mce": None, "relative_ce": None, "relative_mce": None}
  complete = all(c in errors and all(s in errors[c] for s in SEVERITIES)
                 for c in CORRUPTIONS)
  if complete:
    result["ce"] = corruption_errors(errors)
    result["mce"] = float(np.mean(list(result["ce"].values())))
    if clean_error is not None:
      result["relative_ce"] = relative_corruption_errors(errors,
                                                         clean_error)
      result["relative_mce"] = float(np.mean(
          list(result["relative_ce"].values())))
  return result


# ImageNet-P ------------------------------------------------------------------

def flip_probability(predictions: np.ndarray, noise: bool) -> float:
  """FP of one perturbation type over m sequences of n frames.

  FP = 1/(m (n-1)) sum_i sum_{j=2..n} 1[f(x_j^i) != f(x_{j-1}^i)], and for
  noise sequences (frames are independent draws around x_1, not a walk)
  the comparison is with the first frame, 1[f(x_j^i) != f(x_1^i)].

  Args:
    predictions: int (m, n), the top-1 class of every frame.
    noise: True for the noise perturbations (gaussian / shot / speckle).
  """
  p = np.asarray(predictions)
  reference = p[:, :1] if noise else p[:, :-1]
  return float(np.mean(p[:, 1:] != reference))


def _top5_distance(before: np.ndarray, after: np.ndarray) -> float:
  """d(tau(x), tau(x')) = sum_{i=1..5} |min(sigma(i), 6) - i|, sigma(i) the
  rank under x' of the class ranked i under x (ranks from 1): how far the
  top-5 moved, counting moves beyond rank 5 as rank 6."""
  rank_after = np.empty_like(after)
  rank_after[after] = np.arange(1, len(after) + 1)
  sigma = rank_after[before[:5]]
  return float(np.sum(np.abs(np.minimum(sigma, 6) - np.arange(1, 6))))


def top5_distance(logits: np.ndarray, noise: bool) -> float:
  """T5D of one perturbation type: the mean top-5 distance between
  consecutive frames (noise: between each frame and the first).

  Args:
    logits: (m, n, classes) scores of every frame of m sequences.
    noise: as in `flip_probability`.
  """
  ranking = np.argsort(-np.asarray(logits), axis=-1, kind="stable")
  distances = []
  for frames in ranking:
    for j in range(1, len(frames)):
      reference = frames[0] if noise else frames[j - 1]
      distances.append(_top5_distance(reference, frames[j]))
  return float(np.mean(distances))


def mean_over_perturbations(values: Mapping[str, float]) -> float:
  """mFP / mT5D (unnormalised): the mean over perturbation types. The
  paper's mFR and mT5D divide each by AlexNet's value first; we have no
  citable AlexNet ImageNet-P constants, so these stay unnormalised."""
  return float(np.mean(list(values.values())))
