"""The shared torch reference (`torch_reference`): the hand-differentiated
Functions equal autograd of the plain ops, in float64, and the reference
ResNet-50 has the references' parameter count."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_reference import ops, resnet  # noqa: E402


@pytest.mark.parametrize("n", [2, 5])
def test_functions_head_equals_autograd_of_the_ops(n):
  gen = torch.Generator().manual_seed(n)
  x = torch.relu(torch.randn(3, 6, 4, 5, generator=gen, dtype=torch.float64))
  w = torch.randn(3, 21, generator=gen, dtype=torch.float64)
  xa = x.clone().requires_grad_(True)
  za = ops.triu(ops.isqrt(ops.covariance(xa), n))
  (ga,) = torch.autograd.grad(za, xa, w)
  xb = x.clone().requires_grad_(True)
  zb = ops.fmpn_head(xb, n)
  (gb,) = torch.autograd.grad(zb, xb, w)
  np.testing.assert_allclose(zb.detach(), za.detach(), rtol=1e-12)
  np.testing.assert_allclose(gb, ga, rtol=1e-9, atol=1e-12)


def test_resnet50_isqrt_parameter_count():
  """56,929,832: fast-MPN-COV's MPNCOVResNet-50 with d = 256, 1000 classes
  (the same count as gcp-jax's `resnet50_isqrt`)."""
  model = resnet.build("resnet50", 1000)
  assert sum(p.numel() for p in model.parameters()) == 56_929_832
