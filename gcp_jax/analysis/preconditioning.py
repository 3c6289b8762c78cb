"""The pre-conditioning view of GCP: what the normalisation's backward does to
the gradient of the weights that feed the covariance.

The GCP_Optimization poster writes GCP's weight gradient as
F^{-1} dL/dZ dZ/dW: the backward of the matrix normalisation (the square
root in iSQRT-COV) acts like a pre-conditioner F^{-1}. This module measures
that effect on a `GCPHead` ResNet (`gcp_jax.models`):

  features  X = layer4 output (B, H, W, C), fixed
  head      Z = ReLU(BN(conv_1x1(X; W)))      W: (1, 1, C, d), the reduction
            S = cov(Z)   N = f(S)   logits = FC(triu(N))       conv kernel

For each example i, the per-sample gradient g_i = d loss_i / dW (flattened,
p = C d) is computed twice from the SAME forward pass:

  model      through the head as it is: g_i = (dS/dW)^T J_f^T (dL_i/dN)
  reference  'identity_backward' (default): J_f^T replaced by the identity,
             g~_i = (dS/dW)^T (dL_i/dN) -- the forward (logits, losses) is
             unchanged, only the normalisation's backward is removed;
             'plain_covariance': the head re-run with f = identity (the
             'none' representation, plain GCP as in DropCov), same weights
             -- forward and backward both change.

and compared by

  mean_gradient_cosine      cos(mean_i g_i, mean_i g~_i)
  mean_gradient_norm_ratio  ||mean_i g_i|| / ||mean_i g~_i||
  per_sample_cosines        cos(g_i, g~_i), (B,)
  spectra                   eigenvalues of the per-sample gradient second
                            moment M = (1/B) sum_i g_i g_i^T (p x p), from
                            the B x B Gram matrix (1/B) G G^T (same nonzero
                            eigenvalues), descending
  condition                 lambda_1 / lambda_r over the r eigenvalues above
                            rank_rtol * lambda_1 (the numerical rank)
  effective_rank            exp(entropy of lambda / sum lambda) (Roy and
                            Vetterli 2007): p for a flat spectrum, 1 for a
                            single direction

A pre-conditioner in the poster's sense would show as a flatter model
spectrum (smaller condition, larger effective rank) than the reference's;
the function only measures, it does not assume the outcome.

BN mode: 'running' makes g_i depend on example i alone; in 'batch' mode g_i
is the derivative of loss_i of the batch forward (examples coupled through
the batch statistics). The computation runs on one device (per-sample
gradients are B x p numbers), inside a 1-device map with axis
`parallel.DATA_AXIS`, so models built for synchronised-BN training work.

Synopsis:
  res = gradient_preconditioning(model, variables, images, labels,
                                 bn_mode="running", key=jax.random.key(0))
  res.mean_gradient_cosine, res.model_condition, res.reference_condition
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import PartitionSpec as P

from gcp_jax import backend, ops, parallel
from gcp_jax.analysis import forward
from gcp_jax.models import heads
from gcp_jax.ops.linalg import HIGHEST

KERNEL_PATH = "head/reduce/conv_reduce/kernel"
BACKWARDS = ("model", "identity_backward", "plain_covariance")


@dataclasses.dataclass(frozen=True)
class PreconditioningResult:
  """See the module docstring for every quantity."""
  kernel_path: str
  representation: str
  reference: str
  bn_mode: str
  num_samples: int
  mean_gradient_cosine: float
  mean_gradient_norm_ratio: float
  per_sample_cosines: np.ndarray
  model_spectrum: np.ndarray
  reference_spectrum: np.ndarray
  model_condition: float
  reference_condition: float
  model_rank: int
  reference_rank: int
  model_effective_rank: float
  reference_effective_rank: float


def _identity_backward(normalize: Callable[[jax.Array], jax.Array]
                       ) -> Callable[[jax.Array], jax.Array]:
  """f with its forward, and the identity as its backward."""
  @jax.custom_vjp
  def f(s):
    return normalize(s)

  def fwd(s):
    return normalize(s), None

  def bwd(_, cotangent):
    return (cotangent,)

  f.defvjp(fwd, bwd)
  return f


def _normalization(head: nn.Module, backward: str
                   ) -> Callable[[jax.Array], jax.Array]:
  rep = ops.get_representation(head.representation)
  options = dict(head.representation_options)

  def model_normalize(s):
    return rep.normalize(s, **options)
  if backward == "model":
    return model_normalize
  if backward == "identity_backward":
    return _identity_backward(model_normalize)
  return ops.get_representation("none").normalize


def _check_gcp_head(model: nn.Module) -> None:
  head = getattr(model, "head", None)
  if not isinstance(head, heads.GCPHead):
    raise ValueError(f"The pre-conditioning view needs a ResNet with a "
                     f"GCPHead; this model's head is {type(head).__name__}.")
  if (not head.reduce or head.hidden_dims
      or ops.get_representation(head.representation).pool is None):
    raise ValueError(
        "The pre-conditioning view needs a GCPHead of reduction block -> "
        "pool / normalize / vectorize -> one FC; this one has "
        f"reduce={head.reduce}, hidden_dims={head.hidden_dims}, "
        f"representation={head.representation!r}.")


def head_function(model: nn.Module, variables: forward.Variables,
                  features: jax.Array, *, bn_mode: str, key: jax.Array,
                  backward: str = "model"
                  ) -> Callable[[jax.Array], jax.Array]:
  """The GCP head as a function of its reduction kernel W.

  Args:
    model: a ResNet with a `GCPHead`.
    variables: the model's variables.
    features: layer4 output X (B, H, W, C).
    bn_mode: 'batch' or 'running' (the head's BN).
    key: dropout key of the 'batch'-mode forward (`GCPHead` draws none).
    backward: 'model' (the head as it is), 'identity_backward' (same
      forward, identity backward through the normalisation) or
      'plain_covariance' (no normalisation).

  Returns:
    W (1, 1, C, d) -> logits (B, K), built from the head's own pieces:
    `heads.ReductionBlock`, the representation's pool / normalize /
    vectorize, and the FC parameters. Must be called inside a mapped
    context with axis `parallel.DATA_AXIS` if the model synchronises BN.
  """
  _check_gcp_head(model)
  head = model.head
  if backward not in BACKWARDS:
    raise ValueError(f"backward must be one of {BACKWARDS}, got "
                     f"{backward!r}.")
  forward.check_bn_mode(bn_mode)
  rep = ops.get_representation(head.representation)
  normalize = _normalization(head, backward)
  params = variables["params"]["head"]
  reduce_vars = {"params": params["reduce"],
                 "batch_stats": variables["batch_stats"]["head"]["reduce"]}
  block = heads.ReductionBlock(head.dim, head.bn_axis_name)

  def logits(kernel):
    block_vars = {**reduce_vars, "params": {
        **reduce_vars["params"], "conv_reduce": {"kernel": kernel}}}
    z = forward.apply_model(block, block_vars, features, bn_mode, key)
    pooled = rep.vectorize(normalize(rep.pool(z)))
    fc = params["fc"]
    return (jnp.dot(pooled, fc["kernel"], precision=HIGHEST)
            + fc["bias"][None, :])
  return logits


def _spectrum(grads: np.ndarray) -> np.ndarray:
  """Nonzero-part eigenvalues of (1/B) G^T G via (1/B) G G^T, descending."""
  gram = grads @ grads.T / grads.shape[0]
  return np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)


def _condition(spectrum: np.ndarray, rtol: float) -> tuple[float, int]:
  rank = int(np.sum(spectrum > rtol * spectrum[0]))
  return float(spectrum[0] / spectrum[rank - 1]), rank


def _effective_rank(spectrum: np.ndarray) -> float:
  p = spectrum / np.sum(spectrum)
  p = p[p > 0]
  return float(np.exp(-np.sum(p * np.log(p))))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) *
                              np.linalg.norm(b, axis=-1))


def per_sample_gradients(model: nn.Module, variables: forward.Variables,
                         images: Any, labels: Any, *, bn_mode: str,
                         key: jax.Array, backwards: tuple[str, ...]
                         ) -> dict[str, np.ndarray]:
  """{backward: G (B, p)} rows g_i = d loss_i / dW, flattened (float64),
  for each name in `backwards` (see `head_function`)."""
  forward.check_bn_mode(bn_mode)
  _check_gcp_head(model)
  mesh = parallel.resolve_mesh(None)

  def run(variables, images, labels, key):
    if bn_mode == "batch":
      _, state = model.apply(variables, images, True, rngs={"dropout": key},
                             mutable=["intermediates", "batch_stats"])
    else:
      _, state = model.apply(variables, images, False,
                             mutable=["intermediates"])
    features = state["intermediates"]["layer4_out"][0]
    kernel = variables["params"]["head"]["reduce"]["conv_reduce"]["kernel"]
    out = {}
    for backward in backwards:
      head = head_function(model, variables, features, bn_mode=bn_mode,
                           key=key, backward=backward)
      losses = lambda w, head=head: forward.cross_entropy_loss(  # noqa: E731
          head(w), labels)
      out[backward] = jax.jacrev(losses)(kernel).reshape(labels.shape[0], -1)
    return out

  mapped = backend.jit(jax.shard_map(run, mesh=mesh, in_specs=P(),
                                         out_specs=P()))
  grads = jax.device_get(mapped(*parallel.place(
      mesh, (variables, images, labels, key), P())))
  return {k: np.asarray(v, np.float64) for k, v in grads.items()}


def gradient_preconditioning(model: nn.Module, variables: forward.Variables,
                             images: Any, labels: Any, *, bn_mode: str,
                             key: jax.Array,
                             reference: str = "identity_backward",
                             rank_rtol: float = 1e-6
                             ) -> PreconditioningResult:
  """Compares the model's per-sample gradients of the reduction kernel with
  the reference's (see the module docstring).

  Args:
    model: ResNet with a `GCPHead` (any representation).
    variables: its variables.
    images: (B, H, W, 3) batch; labels: (B,) integer classes.
    bn_mode: 'batch' or 'running'.
    key: dropout key ('batch' mode; the GCP head itself has no dropout).
    reference: 'identity_backward' or 'plain_covariance'.
    rank_rtol: eigenvalues above rank_rtol * lambda_1 count in the rank.

  Returns:
    `PreconditioningResult`.
  """
  if reference not in BACKWARDS[1:]:
    raise ValueError(f"reference must be one of {BACKWARDS[1:]}, got "
                     f"{reference!r}.")
  grads = per_sample_gradients(model, variables, images, labels,
                               bn_mode=bn_mode, key=key,
                               backwards=("model", reference))
  g_model, g_ref = grads["model"], grads[reference]
  mean_model, mean_ref = g_model.mean(0), g_ref.mean(0)
  spec_model, spec_ref = _spectrum(g_model), _spectrum(g_ref)
  cond_model, rank_model = _condition(spec_model, rank_rtol)
  cond_ref, rank_ref = _condition(spec_ref, rank_rtol)
  return PreconditioningResult(
      KERNEL_PATH, model.head.representation, reference, bn_mode,
      int(g_model.shape[0]), float(_cosine(mean_model, mean_ref)),
      float(np.linalg.norm(mean_model) / np.linalg.norm(mean_ref)),
      _cosine(g_model, g_ref), spec_model, spec_ref, cond_model, cond_ref,
      rank_model, rank_ref, _effective_rank(spec_model),
      _effective_rank(spec_ref))
