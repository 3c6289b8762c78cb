"""Independent float64 references written from docs/method.md, not from the
code under test (numpy, and the shared torch reference in float64)."""

import numpy as np
import torch

from torch_reference import ops as torch_ops


def covariance(x: np.ndarray) -> np.ndarray:
  """X Ibar X^T with the explicit M x M centring matrix (docs/method.md §2.1).

  x: (B, M, C) -> (B, C, C), float64.
  """
  x = np.asarray(x, np.float64)
  m = x.shape[1]
  ibar = (np.eye(m) - np.ones((m, m)) / m) / m
  xt = np.swapaxes(x, 1, 2)                     # (B, C, M) = X
  return xt @ ibar @ x


def newton_schulz_sqrt(cov: np.ndarray, n: int) -> np.ndarray:
  """The reference iSQRT forward (`torch_reference.ops.isqrt`, written from
  the iSQRT-COV paper) in float64: (B, C, C) -> (B, C, C)."""
  return torch_ops.isqrt(torch.from_numpy(np.asarray(cov, np.float64)),
                         n).numpy()


def central_differences(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
  """d f / d x by central differences, one entry of x at a time; f returns a
  scalar (numpy or JAX)."""
  grad = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    e = np.zeros_like(x)
    e[idx] = h
    grad[idx] = (float(f(x + e)) - float(f(x - e))) / (2 * h)
  return grad


def random_spd(rng: np.random.Generator, b: int, d: int, m: int) -> np.ndarray:
  """B covariances of m random positions in d dims (rank <= m - 1), float64."""
  return covariance(rng.standard_normal((b, m, d)))
