"""Classification heads on a backbone's last feature map.

  GAPHead      global average pooling -> [dropout] -> FC        (the baseline)
  GCPHead      reduction block -> covariance -> post-norm -> triu
               -> [dropout] -> [hidden FC layers] -> FC (optionally without
               the reduction block)
  DropCovHead  reduction block -> [train: ECA + adaptive channel dropout]
               -> covariance -> triu -> FC           (docs/method.md §6.1)

Every head computes in float32 with HIGHEST-precision matmuls whatever the
backbone dtype (docs/method.md §7.1; docs/design.md, 'Precision'), sows its
pooled vector as `intermediates/head/pooled`, and DropCov sows its rate as
`intermediates/head/dropcov_rate`.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn

from gcp_jax import ops
from gcp_jax.model_config import Options
from gcp_jax.models import layers
from gcp_jax.ops.linalg import HIGHEST


ACTIVATIONS = {"relu": nn.relu, "relu6": nn.relu6}


def check_activation(activation: str) -> None:
  """Raises ValueError unless `activation` is a key of `ACTIVATIONS`."""
  if activation not in ACTIVATIONS:
    raise ValueError(f"Unknown activation {activation!r}; use one of "
                     f"{', '.join(ACTIVATIONS)}.")


def dropout(x: jax.Array, rate: float, train: bool,
            module: nn.Module) -> jax.Array:
  """Dropout before the FC (PyTorch `nn.Dropout(rate)`: zero with
  probability `rate`, scale the rest by 1 / (1 - rate)); training only,
  drawn from the 'dropout' RNG stream of `module`."""
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout_rate must be in [0, 1), got {rate}.")
  if not train or rate == 0.0:
    return x
  keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate,
                              x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


class ReductionBlock(nn.Module):
  """Dimension reduction before GCP: 1x1 conv (no bias) C -> d, BN, then
  `activation`: "relu" (iSQRT-COV, the ResNets) or "relu6" (the
  GCP_Optimization MobileNetV2 / ShuffleNetV2 `dimension_reduction`)."""
  dim: int
  bn_axis_name: str | None = None
  activation: str = "relu"
  bn_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = layers.conv(self.dim, 1, dtype=jnp.float32, precision=HIGHEST,
                    name="conv_reduce")(x.astype(jnp.float32))
    x = layers.batch_norm(train, self.bn_axis_name, dtype=jnp.float32,
                          name="bn_reduce", epsilon=self.bn_epsilon)(x)
    check_activation(self.activation)
    return ACTIVATIONS[self.activation](x)


class GAPHead(nn.Module):
  """(B, H, W, C) -> mean over H, W -> [train: dropout] -> FC ->
  (B, num_classes).

  `dropout_rate` > 0 drops the pooled vector in training (the MobileNetV2
  classifier's `Dropout(0.2)`); 0 (default) is the ResNet head.
  """
  num_classes: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    self.sow("intermediates", "pooled", pooled)
    pooled = dropout(pooled, self.dropout_rate, train, self)
    return layers.dense(self.num_classes, x.shape[-1], precision=HIGHEST,
                        name="fc")(pooled)


class GCPHead(nn.Module):
  """Reduction to d channels, a second-order representation, FC.

  Attributes:
    num_classes: classifier outputs.
    dim: d, channels after the reduction block (256 for iSQRT-COV/GCPO, 128
      for the TPAMI/DropCov tables).
    representation: a name from `gcp_jax.ops.REPRESENTATIONS`.
    representation_options: keyword arguments of its normalisation, as
      (key, value) pairs, e.g. (("num_iters", 5),). For "svpn" without a
      "start" option the head learns the start vector (`svpn_start`, (d,),
      initialised N(0, 1)). `gcp_jax.models.registry` fills these from a
      `ModelConfig`.
    bn_axis_name: mapped axis to synchronise BN statistics over, or None.
    activation: of the reduction block, "relu" (default) or "relu6".
    dropout_rate: training-only dropout of the representation before the
      first dense layer (0.2 in the GCP_Optimization MobileNetV2_MPNCOV
      classifier; 0 default).
    reduce: False skips the reduction block: the representation takes the
      backbone's C channels and `dim` is unused (fast-MPN-COV's B-CNN and
      CBP on VGG-16, C = 512).
    hidden_dims: widths of FC -> ReLU -> dropout layers before `fc`,
      `hidden{i}` (VGG's classifier: (4096, 4096) in fast-MPN-COV's ImageNet
      MPN-COV VGG-16); () is one FC.
    hidden_dropout_rate: of the hidden layers (0.5, VGG's `nn.Dropout()`),
      with the 'dropout' RNG stream in training.
    bn_epsilon: of the reduction block's BN (1e-5, PyTorch's; the seed's
      MindSpore heads 1e-4).
  """
  num_classes: int
  dim: int
  representation: str
  representation_options: Options = ()
  bn_axis_name: str | None = None
  activation: str = "relu"
  dropout_rate: float = 0.0
  reduce: bool = True
  hidden_dims: tuple[int, ...] = ()
  hidden_dropout_rate: float = 0.5
  bn_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    rep = ops.get_representation(self.representation)
    if self.reduce:
      x = ReductionBlock(self.dim, self.bn_axis_name, self.activation,
                         self.bn_epsilon, name="reduce")(x, train)
    options = dict(self.representation_options)
    if self.representation == "svpn" and "start" not in options:
      # svPN's power iteration starts from a learned vector, N(0, 1) at
      # init, as in the reference.
      options["start"] = self.param("svpn_start", nn.initializers.normal(1.0),
                                    (x.shape[-1],), jnp.float32)
    pooled = rep(x, **options)
    self.sow("intermediates", "pooled", pooled)
    h = dropout(pooled, self.dropout_rate, train, self)
    for i, width in enumerate(self.hidden_dims):
      h = layers.dense(width, h.shape[-1], precision=HIGHEST,
                       name=f"hidden{i}")(h)
      h = nn.Dropout(self.hidden_dropout_rate,
                     deterministic=not train)(nn.relu(h))
    return layers.dense(self.num_classes, h.shape[-1], precision=HIGHEST,
                        name="fc")(h)


def _eca_init(key, shape, dtype=jnp.float32):
  """PyTorch's default Conv1d init for fan_in = k: U(-1/sqrt(k), 1/sqrt(k))."""
  bound = 1.0 / shape[0] ** 0.5
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class DropCovHead(nn.Module):
  """CNN DropCov: adaptive channel dropout before plain covariance pooling.

  Training: a = softmax(conv1d_k(GAP(x))), x' = x (1 + a),
  p = clamp(1 - (10 / log2 d) mean cos(a, Sigma' 1), 0, 1) (no gradient),
  x'' = channel_dropout(x', p) with the 'dropout' RNG stream. Evaluation
  skips both, as the reference does. Then covariance -> triu -> FC.

  Attributes:
    num_classes, dim, bn_axis_name: as in `GCPHead`.
    eca_kernel_size: k of the 1-D convolution (3 in DropCov).
    rate_axis_name: mapped axis over which the cosine's batch mean is also
      averaged (global-batch rate); None = per-device rate, as the reference
      under DataParallel.
    activation: of the reduction block, "relu" (default) or "relu6".
    bn_epsilon: as in `GCPHead`.
  """
  num_classes: int
  dim: int
  eca_kernel_size: int = 3
  rate_axis_name: str | None = None
  bn_axis_name: str | None = None
  activation: str = "relu"
  bn_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = ReductionBlock(self.dim, self.bn_axis_name, self.activation,
                       self.bn_epsilon, name="reduce")(x, train)
    kernel = self.param("eca_conv", _eca_init, (self.eca_kernel_size,))
    if train:
      a = ops.channel_attention(x, kernel)
      x = x * (1.0 + a[:, None, None, :])
      rate = ops.adaptive_drop_rate(x, a, self.rate_axis_name)
      self.sow("intermediates", "dropcov_rate", rate)
      x = ops.channel_dropout(self.make_rng("dropout"), x, rate)
    pooled = ops.triu_vec(ops.covariance(x))
    self.sow("intermediates", "pooled", pooled)
    return layers.dense(self.num_classes, pooled.shape[-1], precision=HIGHEST,
                        name="fc")(pooled)
