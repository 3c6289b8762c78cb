"""covariance / bilinear against the explicit M x M centring matrix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax import ops
from tests.ops import references as ref

RNG = np.random.default_rng(1)


def test_nhwc_matches_centring_matrix_formula():
  x = RNG.standard_normal((3, 5, 7, 16))
  got = ops.covariance(jnp.asarray(x, jnp.float32))
  want = ref.covariance(x.reshape(3, 35, 16))
  assert got.shape == (3, 16, 16) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_tokens_match_numpy_cov_biased():
  x = RNG.standard_normal((2, 50, 8))
  got = ops.covariance(jnp.asarray(x, jnp.float32))
  for b in range(2):
    np.testing.assert_allclose(got[b], np.cov(x[b].T, bias=True),
                               rtol=1e-5, atol=1e-6)


def test_bilinear_is_uncentred():
  x = RNG.standard_normal((2, 4, 4, 6)) + 3.0
  got = ops.bilinear(jnp.asarray(x, jnp.float32))
  xm = x.reshape(2, 16, 6)
  want = np.einsum("bmc,bmd->bcd", xm, xm) / 16
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bfloat16_in_float32_out():
  x = jnp.asarray(RNG.standard_normal((2, 6, 6, 8)), jnp.bfloat16)
  got = ops.covariance(x)
  assert got.dtype == jnp.float32
  want = ref.covariance(np.asarray(x.astype(jnp.float32)).reshape(2, 36, 8))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_no_m_by_m_intermediate():
  """The compiled computation never holds an (M, M) array (M = 3136 here)."""
  x = jnp.zeros((2, 56, 56, 8))
  hlo = jax.jit(ops.covariance).lower(x).as_text()
  assert "3136,3136" not in hlo.replace(" ", "")


def test_bad_rank():
  with pytest.raises(ValueError, match=r"\(B, H, W, C\).*got shape \(4, 4\)"):
    ops.covariance(jnp.ones((4, 4)))
