"""Parameter counts per module and the FLOPs of one forward pass.

Synopsis:
  model = create_model("resnet50_isqrt", 1000)
  print(format_summary(summarize(model, image_size=224)))

Two FLOP numbers are reported, because conventions differ:

* `gmacs`: multiply-adds of every convolution and matrix product, counted
  from the jaxpr as (output elements) x (kernel window x input channels), a
  multiply-add counting once. This is the convention of the GCP papers'
  "GFLOPs" columns (and of torchvision / thop tables): compare it with them.
  Element-wise ops, pooling and normalisation are not counted; neither is
  `eigh` (an opaque library call).
* `xla_gflops`: XLA's `cost_analysis()` of the compiled forward: a
  multiply-add counts 2, element-wise ops are included, and positions of a
  convolution that fall on zero padding are excluded, so it is not simply
  2 x gmacs (about 7% below it for ResNet-18).

Nothing is allocated: shapes come from `jax.eval_shape` and the forward is
only traced and compiled.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from gcp_jax import backend


@dataclasses.dataclass(frozen=True)
class ModelSummary:
  """Params per top-level module and in total; forward cost for one image."""
  params_per_module: dict[str, int]
  total_params: int
  gmacs: float
  xla_gflops: float


def _eqn_macs(eqn) -> int:
  """Multiply-adds of one conv or dot_general equation (0 for others)."""
  name = eqn.primitive.name
  if name == "conv_general_dilated":
    lhs, rhs = (v.aval for v in eqn.invars)
    out = eqn.outvars[0].aval
    dn = eqn.params["dimension_numbers"]
    kernel_window = int(np.prod([rhs.shape[i] for i in dn.rhs_spec[2:]]))
    in_per_group = rhs.shape[dn.rhs_spec[1]]
    return int(np.prod(out.shape)) * kernel_window * in_per_group
  if name == "dot_general":
    lhs, _ = (v.aval for v in eqn.invars)
    (contract, _), _ = eqn.params["dimension_numbers"]
    k = int(np.prod([lhs.shape[i] for i in contract]))
    return int(np.prod(eqn.outvars[0].aval.shape)) * k
  return 0


def _sub_jaxprs(eqn):
  for value in eqn.params.values():
    for item in value if isinstance(value, (list, tuple)) else (value,):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def count_macs(jaxpr) -> int:
  """Multiply-adds of all convs and matmuls in a jaxpr, recursing into
  sub-jaxprs (jit, custom_jvp/vjp, remat) and multiplying `scan` bodies by
  their length (a `fori_loop` with a static trip count is a `scan`)."""
  total = 0
  for eqn in jaxpr.eqns:
    total += _eqn_macs(eqn)
    repeat = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
    for sub in _sub_jaxprs(eqn):
      total += repeat * count_macs(sub)
  return total


def count_params(tree) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def summarize(model: nn.Module, image_size: int,
              channels: int = 3) -> ModelSummary:
  """Counts the parameters of `model` and the FLOPs of one eval forward.

  Args:
    model: an unbound classifier taking (B, H, W, C) images.
    image_size: H = W of the input.
    channels: C.

  Returns:
    A `ModelSummary` for a batch of one image.
  """
  x = jax.ShapeDtypeStruct((1, image_size, image_size, channels), jnp.float32)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), False))
  per_module = {name: count_params(sub)
                for name, sub in variables["params"].items()}
  forward = lambda v, x: model.apply(v, x, False)  # noqa: E731
  macs = count_macs(jax.make_jaxpr(forward)(variables, x).jaxpr)
  cost = backend.jit(forward).lower(variables, x).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return ModelSummary(per_module, count_params(variables["params"]),
                      macs / 1e9, float(cost["flops"]) / 1e9)


def format_summary(summary: ModelSummary) -> str:
  """A plain-text table of `summary`."""
  lines = [f"{'module':<24}{'params':>14}"]
  lines += [f"{name:<24}{count:>14,}"
            for name, count in summary.params_per_module.items()]
  lines.append(f"{'total':<24}{summary.total_params:>14,}  "
               f"({summary.total_params / 1e6:.2f} M)")
  lines.append(f"forward, 1 image: {summary.gmacs:.3f} GMACs (convs and "
               f"matmuls, multiply-add = 1; the papers' 'GFLOPs'), "
               f"{summary.xla_gflops:.3f} GFLOPs by XLA cost analysis")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  """`python -m gcp_jax.models.summary NAME [--image-size N]
  [--num-classes K]`: prints the summary of a registered model."""
  import argparse

  from gcp_jax.models.registry import create_model
  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument("name")
  parser.add_argument("--image-size", type=int, default=224)
  parser.add_argument("--num-classes", type=int, default=1000)
  args = parser.parse_args(argv)
  try:
    model = create_model(args.name, args.num_classes)
  except ValueError as e:
    parser.error(str(e))
  print(format_summary(summarize(model, args.image_size)))


if __name__ == "__main__":
  main()
