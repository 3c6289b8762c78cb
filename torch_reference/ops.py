"""The GCP ops in PyTorch, as the references compute them.

Notation: features X of shape (B, C, H, W), M = H W positions, centring
matrix Ibar = (I - 1 1^T / M) / M of shape (M, M).

  covariance(x)       Sigma = X Ibar X^T                          (B, C, C)
  isqrt(cov, n)       trace-normalised coupled Newton-Schulz, n steps, times
                      sqrt(trace): Y_n sqrt(tr Sigma)              (B, C, C)
  triu(mat)           row-major upper triangle incl. the diagonal
                                                          (B, C (C + 1) / 2)
  fmpn_head(x, n)     triu(isqrt(covariance(x))) through fast-MPN-COV's
                      three `autograd.Function`s (Covpool, Sqrtm, Triuvec)
                      with their hand-written backward passes: the
                      algorithm the reference's users run.

The first three are differentiated by autograd. The Functions follow the
iSQRT-COV paper (Li et al., CVPR 2018, sections 3.1-3.3): Sqrtm keeps
every Y_k, Z_k of the forward pass and runs the recurrence backwards, and
adds the trace-normalisation term per sample in a Python loop, as the
reference does.
"""

import torch


def _centring(m: int, like: torch.Tensor) -> torch.Tensor:
  """Ibar = (I - 1 1^T / M) / M, (M, M), dtype and device of `like`."""
  eye = torch.eye(m, dtype=like.dtype, device=like.device)
  return (eye - 1.0 / m) / m


def _eye3(c: int, like: torch.Tensor) -> torch.Tensor:
  return 3.0 * torch.eye(c, dtype=like.dtype, device=like.device)


def _triu_index(c: int, device: torch.device) -> torch.Tensor:
  """Flat indices of the non-zeros of ones(c, c).triu(), row-major."""
  return torch.ones(c, c, device=device).triu().reshape(-1).nonzero()[:, 0]


def covariance(x: torch.Tensor) -> torch.Tensor:
  """(B, C, H, W) -> Sigma = X Ibar X^T, (B, C, C)."""
  b, c, h, w = x.shape
  feats = x.reshape(b, c, h * w)
  return feats @ _centring(h * w, x) @ feats.transpose(1, 2)


def isqrt(cov: torch.Tensor, n: int = 5) -> torch.Tensor:
  """Coupled Newton-Schulz on A = Sigma / tr(Sigma) with Y_0 = A, Z_0 = I:
  T_k = (3 I - Z_{k-1} Y_{k-1}) / 2, Y_k = Y_{k-1} T_k, Z_k = T_k Z_{k-1};
  the first step uses Z_0 = I, the last computes Y only. Returns
  Y_n sqrt(tr Sigma)."""
  trace = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1)[:, None, None]
  a = cov / trace
  i3 = _eye3(cov.shape[-1], cov)
  if n == 1:
    y = 0.5 * a @ (i3 - a)
  else:
    t = 0.5 * (i3 - a)
    y, z = a @ t, t
    for _ in range(n - 2):
      t = 0.5 * (i3 - z @ y)
      y, z = y @ t, t @ z
    y = 0.5 * y @ (i3 - z @ y)
  return y * torch.sqrt(trace)


def triu(mat: torch.Tensor) -> torch.Tensor:
  """(B, d, d) -> (B, d (d + 1) / 2): the reference Triuvec order,
  unscaled."""
  d = mat.shape[-1]
  return mat.reshape(mat.shape[0], d * d)[:, _triu_index(d, mat.device)]


class Covpool(torch.autograd.Function):
  """Sigma = X Ibar X^T; backward (G + G^T) X Ibar."""

  @staticmethod
  def forward(ctx, x):
    b, c, h, w = x.shape
    feats = x.reshape(b, c, h * w)
    ibar = _centring(h * w, x)
    ctx.save_for_backward(feats, ibar)
    ctx.in_shape = x.shape
    return feats @ ibar @ feats.transpose(1, 2)

  @staticmethod
  def backward(ctx, g):
    feats, ibar = ctx.saved_tensors
    return ((g + g.transpose(1, 2)) @ feats @ ibar).reshape(ctx.in_shape)


class Sqrtm(torch.autograd.Function):
  """`isqrt` for n >= 2 with the hand-written backward of the recurrence."""

  @staticmethod
  def forward(ctx, cov, n):
    c = cov.shape[-1]
    i3 = _eye3(c, cov)
    t = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1)
    a = cov / t[:, None, None]
    tk = 0.5 * (i3 - a)
    ys, zs = [a @ tk], [tk]
    for _ in range(n - 2):
      tk = 0.5 * (i3 - zs[-1] @ ys[-1])
      ys.append(ys[-1] @ tk)
      zs.append(tk @ zs[-1])
    y_n = 0.5 * ys[-1] @ (i3 - zs[-1] @ ys[-1])
    ctx.save_for_backward(cov, a, t, y_n, torch.stack(ys, 1),
                          torch.stack(zs, 1))
    return y_n * t.sqrt()[:, None, None]

  @staticmethod
  def backward(ctx, g):
    cov, a, t, y_n, ys, zs = ctx.saved_tensors
    c = cov.shape[-1]
    i3 = _eye3(c, cov)
    sqrt_t = t.sqrt()
    g_bar = g * sqrt_t[:, None, None]
    g_trace_out = (g * y_n).sum(dim=(1, 2)) / (2.0 * sqrt_t)
    y, z = ys[:, -1], zs[:, -1]
    dy = 0.5 * (g_bar @ (i3 - y @ z) - z @ y @ g_bar)
    dz = -0.5 * y @ g_bar @ y
    for k in range(ys.shape[1] - 2, -1, -1):
      y, z = ys[:, k], zs[:, k]
      p, q = i3 - y @ z, z @ y
      dy, dz = (0.5 * (dy @ p - z @ dz @ z - q @ dy),
                0.5 * (p @ dz - y @ dy @ y - dz @ q))
    da = (0.5 * (dy @ (i3 - a) - dz - a @ dy)).transpose(1, 2)
    grad = da / t[:, None, None]
    inner = (da * cov).sum(dim=(1, 2))
    eye = torch.eye(c, dtype=cov.dtype, device=cov.device)
    for i in range(cov.shape[0]):   # the reference's per-sample loop
      grad[i] += (g_trace_out[i] - inner[i] / (t[i] * t[i])) * eye
    return grad, None


class Triuvec(torch.autograd.Function):
  """`triu` whose backward writes the cotangent into a zero matrix."""

  @staticmethod
  def forward(ctx, mat):
    b, c, _ = mat.shape
    index = _triu_index(c, mat.device)
    ctx.save_for_backward(index)
    ctx.shape = mat.shape
    return mat.reshape(b, c * c)[:, index]

  @staticmethod
  def backward(ctx, g):
    (index,) = ctx.saved_tensors
    b, c, _ = ctx.shape
    grad = g.new_zeros(b, c * c)
    grad[:, index] = g
    return grad.reshape(b, c, c)


def fmpn_head(x: torch.Tensor, n: int = 5) -> torch.Tensor:
  """(B, C, H, W) -> (B, C (C + 1) / 2) through the reference's Functions
  (n >= 2)."""
  return Triuvec.apply(Sqrtm.apply(Covpool.apply(x), n))
