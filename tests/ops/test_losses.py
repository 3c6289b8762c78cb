"""cross_entropy against a float64 numpy formula and hand values."""

import numpy as np
import pytest

from gcp_jax.ops import cross_entropy, soft_target_cross_entropy


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
