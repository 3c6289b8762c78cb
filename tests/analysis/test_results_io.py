"""Result dataclasses survive JSON and .npz round trips."""

import numpy as np
import pytest

from gcp_jax.analysis import results_io, spectral
from gcp_jax.analysis.preconditioning import PreconditioningResult


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_round_trip(tmp_path, suffix):
  eig = spectral.EigenResult(np.array([3.0, 1.0]), np.eye(2, 5),
                             np.array([1e-6, 2e-6]), np.array([40, 40]),
                             "lanczos")
  pre = PreconditioningResult(
      "head/reduce/conv_reduce/kernel", "isqrt", "identity_backward",
      "running", 4, 0.9, 0.5, np.array([0.8, 0.9, 1.0, 0.7]),
      np.array([4.0, 2.0, 1.0, 0.5]), np.array([8.0, 1.0, 0.1, 0.01]),
      8.0, 800.0, 4, 4, 3.1, 1.6)
  for result in (eig, pre):
    path = str(tmp_path / f"{type(result).__name__}{suffix}")
    results_io.save(result, path)
    loaded = results_io.load(type(result), path)
    for name, want in vars(result).items():
      got = getattr(loaded, name)
      if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, want)
      else:
        assert got == want, name


def test_unknown_suffix_is_an_error(tmp_path):
  with pytest.raises(ValueError, match="use .json or .npz"):
    results_io.save(spectral.TraceEstimate(1.0, 0.1, np.ones(2), 2),
                    str(tmp_path / "x.txt"))
