"""Layer factories with PyTorch-equivalent initialisation and BN semantics.

The GCP references train torchvision-style networks, so every default here is
the PyTorch one (METHOD sections 1.2, 6):

* conv kernels: kaiming-normal, fan_out, gain sqrt(2) (untruncated);
* BatchNorm: scale 1, bias 0, PyTorch momentum 0.1 == Flax momentum 0.9,
  epsilon 1e-5;
* Linear: PyTorch's default, weight and bias ~ U(-1/sqrt(fan_in),
  1/sqrt(fan_in));
* convolutions pad explicitly as PyTorch does (k // 2 on every side), not
  'SAME', which pads asymmetrically at stride 2 and would break weight import.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

Dtype = Any
Precision = lax.Precision | None

conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
linear_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in",
                                                      "uniform")


def linear_bias_init(fan_in: int):
  """PyTorch's Linear bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / float(fan_in) ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def conv(features: int, kernel: int, stride: int = 1, *, dtype: Dtype,
         name: str, precision: Precision = None) -> nn.Conv:
  """k x k convolution without bias, PyTorch padding k // 2."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 kernel_init=conv_kernel_init, dtype=dtype,
                 param_dtype=jnp.float32, precision=precision, name=name)


def batch_norm(train: bool, axis_name: str | None, *, dtype: Dtype,
               name: str) -> nn.BatchNorm:
  """BatchNorm with PyTorch momentum/eps; statistics synchronised over
  `axis_name` when it is set (and bound by a mapped axis)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, axis_name=axis_name if train else None,
                      dtype=dtype, param_dtype=jnp.float32, name=name)


def dense(features: int, fan_in: int, *, name: str,
          dtype: Dtype = jnp.float32, use_bias: bool = True,
          precision: Precision = None) -> nn.Dense:
  """Linear layer with PyTorch's default initialisation, float32 params."""
  return nn.Dense(features, use_bias=use_bias, kernel_init=linear_kernel_init,
                  bias_init=linear_bias_init(fan_in), dtype=dtype,
                  param_dtype=jnp.float32, precision=precision, name=name)


max_pool_3x3_s2 = functools.partial(nn.max_pool, window_shape=(3, 3),
                                    strides=(2, 2),
                                    padding=((1, 1), (1, 1)))
