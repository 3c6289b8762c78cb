"""cross_entropy against a float64 numpy formula and hand values."""

import numpy as np
import pytest

from gcp_jax.ops import cross_entropy, soft_target_cross_entropy
from gcp_jax.ops.losses import smoothed_targets


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_matches_float64_reference(eps):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 7)) * 3
  labels = rng.integers(0, 7, size=5)
  shifted = logits - logits.max(-1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  targets = np.full((5, 7), eps / 7)
  targets[np.arange(5), labels] += 1 - eps
  want = -(targets * log_p).sum(-1)
  got = np.asarray(cross_entropy(logits.astype(np.float32), labels, eps))
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_uniform_logits_give_log_k():
  got = cross_entropy(np.zeros((2, 4), np.float32), np.array([0, 3]))
  np.testing.assert_allclose(np.asarray(got), np.log(4.0), rtol=1e-7)


def test_soft_targets_match_float64_reference():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(4, 6))
  targets = rng.dirichlet(np.ones(6), size=4)
  shifted = logits - logits.max(-1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  got = soft_target_cross_entropy(logits.astype(np.float32),
                                  targets.astype(np.float32))
  np.testing.assert_allclose(np.asarray(got), -(targets * log_p).sum(-1),
                             rtol=1e-5)


def _mindspore_cross_entropy_smooth(logits, labels, smooth_factor,
                                    num_classes):
  """float64 transcription of the TPAMI seed's `src/CrossEntropySmooth.py`:
  one-hot with on_value 1 - f and off_value f / (num_classes - 1), then
  softmax cross-entropy, per example."""
  on_value, off_value = 1.0 - smooth_factor, smooth_factor / (num_classes - 1)
  onehot = np.where(np.arange(logits.shape[1])[None] == labels[:, None],
                    on_value, off_value)
  shifted = logits - logits.max(-1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  return -(onehot * log_p).sum(-1)


def test_others_style_is_the_mindspore_seed_loss():
  """The seed's 1001-way head, eps 0.1: the true class gets 0.9 exactly and
  the 1000 others 1e-4 each."""
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(3, 1001)) * 2
  labels = np.array([0, 999, 17])
  got = cross_entropy(logits.astype(np.float32), labels, 0.1, "others")
  np.testing.assert_allclose(np.asarray(got), _mindspore_cross_entropy_smooth(
      logits, labels, 0.1, 1001), rtol=1e-5)
  targets = np.asarray(smoothed_targets(labels, 1001, 0.1, "others"))
  assert targets[0, 0] == np.float32(0.9)
  np.testing.assert_allclose(targets[0, 1:], 1e-4, rtol=1e-6)
  np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)


def test_unknown_smoothing_style_names_the_valid_ones():
  with pytest.raises(ValueError, match="'mindspore'.*uniform, others"):
    smoothed_targets(np.array([0]), 3, 0.1, "mindspore")
