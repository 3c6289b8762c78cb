"""Layer factories with PyTorch-equivalent initialisation and BN semantics.

The GCP references train torchvision-style networks, so every default here is
the PyTorch one (docs/method.md §7.4; docs/design.md, 'Initialisation'):

* conv kernels: kaiming-normal, fan_out, gain sqrt(2) (untruncated);
* BatchNorm: scale 1, bias 0, PyTorch momentum 0.1 == Flax momentum 0.9,
  epsilon 1e-5;
* Linear: PyTorch's default, weight and bias ~ U(-1/sqrt(fan_in),
  1/sqrt(fan_in));
* convolutions and the stem's max-pool pad as PyTorch does (k // 2 on every
  side). `padding="same"` pads as MindSpore's `pad_mode='same'` (and XLA's
  'SAME'): a total of max((ceil(H / s) - 1) s + k - H, 0), the odd pixel
  after (bottom / right). The two differ only at stride 2: the seed's
  MindSpore ResNet-50/101/152 use 'same', so their weights compute their
  own function only with it.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from gcp_jax import backend
from gcp_jax.ops import batch_norm as batch_norm_ops

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


class PointwiseConv(nn.Module):
  """1 x 1 convolution without bias, computed as a matrix product.

  y[n, i, j, :] = x[n, s * i, s * j, :] @ kernel[0, 0]   (stride s, no padding)

  Shapes: x `(B, H, W, C_in)` -> `(B, ceil(H / s), ceil(W / s), features)`,
  exactly PyTorch's `Conv2d(C_in, features, 1, stride=s, bias=False)`.

  The parameter is the same `kernel` of shape `(1, 1, C_in, features)`, with
  the same initialiser and RNG path, as `nn.Conv(features, (1, 1))`, so
  checkpoints and weight import do not see the difference. It is the CPU
  variant of a 1 x 1 convolution (`gcp_jax.backend`): the gradients of a dot
  are dots, which XLA:CPU runs faster than its convolution backward, and the
  dot runs on the `(B * H * W, C_in)` matrix rather than the 4-D array, so
  the kernel gradient needs no transposed copy of the output gradient
  (benchmarks/RESULTS.md, "XLA:CPU convolutions").
  """
  features: int
  stride: int = 1
  dtype: Dtype = None
  precision: Precision = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", conv_kernel_init,
                        (1, 1, x.shape[-1], self.features), jnp.float32)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    if self.stride > 1:
      x = x[:, ::self.stride, ::self.stride, :]
    y = lax.dot_general(x.reshape(-1, x.shape[-1]), kernel[0, 0],
                        (((1,), (0,)), ((), ())), precision=self.precision)
    return y.reshape(*x.shape[:-1], self.features)


PADDINGS = ("pytorch", "same")


def check_padding(padding: str) -> None:
  """Raises ValueError unless `padding` is one of `PADDINGS`."""
  if padding not in PADDINGS:
    raise ValueError(f"Unknown padding {padding!r}; use one of {PADDINGS} "
                     f"('same' for MindSpore's Bottleneck ResNets).")


def _spatial_padding(kernel: int, padding: str):
  """Flax padding of a k x k window: PyTorch's k // 2 or XLA's 'SAME'."""
  if padding == "same":
    return "SAME"
  pad = kernel // 2
  return ((pad, pad), (pad, pad))


def conv(features: int, kernel: int, stride: int = 1, *, dtype: Dtype,
         name: str, precision: Precision = None,
         padding: str = "pytorch", use_bias: bool = False,
         groups: int = 1) -> nn.Module:
  """k x k convolution, without bias unless `use_bias` (then a `bias`
  parameter initialised to 0, as VGG's), padded as `padding` says (module
  docstring; both pad nothing for k = 1). `groups` is PyTorch's `groups`
  (`groups = features = C_in`: a depthwise convolution, kernel (k, k, 1,
  C)); kaiming fan-out is then k k features, as in PyTorch. On the CPU a
  bias-free, ungrouped 1 x 1 kernel runs as `PointwiseConv`
  (`gcp_jax.backend`); the variables are the same either way."""
  if (kernel == 1 and not use_bias and groups == 1
      and backend.pointwise_conv_as_dot()):
    return PointwiseConv(features, stride, dtype=dtype, precision=precision,
                         name=name)
  return nn.Conv(features, (kernel, kernel), (stride, stride),
                 padding=_spatial_padding(kernel, padding), use_bias=use_bias,
                 feature_group_count=groups,
                 kernel_init=conv_kernel_init, dtype=dtype,
                 param_dtype=jnp.float32, precision=precision, name=name)


class BatchNorm(nn.Module):
  """BatchNorm over the last axis with PyTorch's momentum and epsilon.

  The same variables as `flax.linen.BatchNorm` (params `scale`, `bias`;
  batch_stats `mean`, `var`, biased variance, running update
  r <- momentum r + (1 - momentum) statistic, skipped at `init`), so
  checkpoints and weight import are unaffected, but normalising as
  `gcp_jax.ops.batch_norm.normalize` does (x a + b, whose backward pass keeps
  no centred copy of x; see that module for why and the measurement).

  Shapes: x `(..., C)` -> `(..., C)` in `dtype`; statistics and the
  normalisation are float32. In training (`use_running_average=False`) the
  moments are averaged over `axis_name` (synchronised BatchNorm) when set.
  """
  use_running_average: bool
  axis_name: str | None = None
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (channels,),
                       jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (channels,),
                      jnp.float32)
    running_mean = self.variable("batch_stats", "mean", jnp.zeros,
                                 (channels,), jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones,
                                (channels,), jnp.float32)
    if self.use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      mean, var = batch_norm_ops.batch_moments(x, self.axis_name)
      if not self.is_initializing():
        m = self.momentum
        running_mean.value = m * running_mean.value + (1 - m) * mean
        running_var.value = m * running_var.value + (1 - m) * var
    y = batch_norm_ops.normalize(x, mean, var, scale, bias, self.epsilon)
    return y.astype(self.dtype)


def batch_norm(train: bool, axis_name: str | None, *, dtype: Dtype,
               name: str, epsilon: float = 1e-5) -> BatchNorm:
  """BatchNorm with PyTorch momentum and, by default, PyTorch's epsilon;
  statistics synchronised over `axis_name` when it is set (and bound by a
  mapped axis)."""
  return BatchNorm(use_running_average=not train,
                   axis_name=axis_name if train else None, dtype=dtype,
                   epsilon=epsilon, name=name)


def batch_norm_epsilons(model: nn.Module, image_size: int
                        ) -> dict[str, float]:
  """{module path, e.g. "layer1/block0/bn1": epsilon} of every `BatchNorm`
  of `model`, read while initialising it abstractly on one image of
  `image_size` (nothing is computed)."""
  found: dict[str, float] = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, BatchNorm):
      found["/".join(context.module.path)] = float(context.module.epsilon)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)),
        False))
  return found


def dense(features: int, fan_in: int, *, name: str,
          dtype: Dtype = jnp.float32, use_bias: bool = True,
          precision: Precision = None) -> nn.Dense:
  """Linear layer with PyTorch's default initialisation, float32 params."""
  return nn.Dense(features, use_bias=use_bias, kernel_init=linear_kernel_init,
                  bias_init=linear_bias_init(fan_in), dtype=dtype,
                  param_dtype=jnp.float32, precision=precision, name=name)


def max_pool_3x3_s2(x: jax.Array, padding: str = "pytorch") -> jax.Array:
  """3 x 3 max-pool at stride 2 of (B, H, W, C), padded as `padding` says
  (padding never wins the max)."""
  return nn.max_pool(x, (3, 3), (2, 2), padding=_spatial_padding(3, padding))
