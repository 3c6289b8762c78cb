"""Re-drawing a freshly initialised model's weights as a recipe does.

`config.init_scheme` chooses how the weights of a model trained from scratch
are drawn:

  "module"     each layer's own initialiser (PyTorch's defaults, as the
               PyTorch references; docs/method.md §7.4);
  "mindspore"  the TPAMI seed's `init_weight` (`train.py`), applied after
               the model is built, as the seed applies it to its cells:
                 every convolution kernel (4-D `kernel`)  XavierUniform:
                   U(-b, b), b = sqrt(6 / (fan_in + fan_out)),
                   fan_in = k_h k_w C_in, fan_out = k_h k_w C_out;
                 every dense kernel (2-D `kernel`)        TruncatedNormal:
                   0.01 x a standard normal truncated to [-2, 2];
                 dense biases                             0 (the seed's
                   `_fc(..., bias_init=0)`).
               BatchNorm scale 1 and bias 0 are the same in all schemes.
  "mobilenet_v2"  GCP_Optimization `src/models/MobileNetV2*.py`'s init loop:
               convolutions as "module" (kaiming-normal fan-out), every
               dense kernel N(0, 0.01), dense biases 0;
  "pytorch_default"  PyTorch's own layer defaults, for references without
               an init loop (GCP_Optimization `src/models/ShuffleNetV2*.py`):
               every convolution kernel U(-b, b), b = 1 / sqrt(fan_in),
               fan_in = k_h k_w C_in / groups (`kaiming_uniform_(a=sqrt(5))`;
               the Flax kernel (k_h, k_w, C_in / groups, C_out)); dense
               layers as "module" (PyTorch's Linear default already).

`reinitialize(params, scheme, key)` returns new params; other leaves (ECA
kernels, BatchNorm) keep their values.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

INIT_SCHEMES = ("module", "mindspore", "mobilenet_v2", "pytorch_default")
FC_NORMAL_STD = 0.01
TRUNCATED_NORMAL_STD = 0.01


def xavier_uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """U(-b, b) with b = sqrt(6 / (fan_in + fan_out)) for a Flax conv kernel
  (k_h, k_w, C_in, C_out)."""
  receptive = shape[0] * shape[1]
  bound = (6.0 / (receptive * (shape[2] + shape[3]))) ** 0.5
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def truncated_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """0.01 x N(0, 1) truncated to [-2, 2] (MindSpore's TruncatedNormal(0.01):
  draws beyond two standard deviations are redrawn, no rescaling)."""
  return TRUNCATED_NORMAL_STD * jax.random.truncated_normal(
      key, -2.0, 2.0, shape, jnp.float32)


def pytorch_conv_default(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """U(-b, b), b = 1 / sqrt(k_h k_w C_in / groups), for a Flax conv kernel
  (k_h, k_w, C_in / groups, C_out): PyTorch's Conv2d default."""
  bound = 1.0 / (shape[0] * shape[1] * shape[2]) ** 0.5
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def reinitialize(params: Any, scheme: str, key: jax.Array) -> Any:
  """`params` (a Flax params tree) re-drawn as `scheme` says (module
  docstring); "module" returns them unchanged."""
  if scheme not in INIT_SCHEMES:
    raise ValueError(f"Unknown init_scheme {scheme!r}; use one of "
                     f"{', '.join(INIT_SCHEMES)}.")
  if scheme == "module":
    return params
  flat = traverse_util.flatten_dict(params)
  dense_layers = {path[:-1] for path, leaf in flat.items()
                  if path[-1] == "kernel" and leaf.ndim == 2}
  keys = jax.random.split(key, len(flat))
  out = {}
  for k, (path, leaf) in zip(keys, sorted(flat.items())):
    conv, dense = (path[-1] == "kernel" and leaf.ndim == 4,
                   path[-1] == "kernel" and leaf.ndim == 2)
    dense_bias = path[-1] == "bias" and path[:-1] in dense_layers
    if scheme == "mindspore":
      if conv:
        leaf = xavier_uniform(k, leaf.shape)
      elif dense:
        leaf = truncated_normal(k, leaf.shape)
      elif dense_bias:
        leaf = jnp.zeros_like(leaf)
    elif scheme == "mobilenet_v2":
      if dense:
        leaf = FC_NORMAL_STD * jax.random.normal(k, leaf.shape, jnp.float32)
      elif dense_bias:
        leaf = jnp.zeros_like(leaf)
    elif conv:                                   # pytorch_default
      leaf = pytorch_conv_default(k, leaf.shape)
    out[path] = leaf
  return traverse_util.unflatten_dict(out)
