"""Per-device train and eval steps, mapped over the mesh (pmap style).

Each step body sees its device's slice of the batch and the replicated
state; per-device gradients (parameters cast to device-varying before
differentiation) and BatchNorm statistics are averaged with `lax.pmean`,
metric sums and counts are added with `lax.psum` over `DATA_AXIS`. The body
is mapped with `jax.shard_map` and compiled once with `jax.jit` (the state
is donated), with the XLA options of `gcp_jax.backend`. Nothing
inside syncs with the host.

Synopsis:
  train_step = make_train_step(model, tx, schedule, mesh, label_smoothing=0.)
  state, metrics = train_step(state, batch)          # metrics: sums, counts
  eval_step = make_eval_step(model, mesh)
  sums = eval_step(state, batch)                     # batch has a 'mask'
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from gcp_jax import backend
from gcp_jax.ops.losses import cross_entropy, soft_target_cross_entropy
from gcp_jax.parallel import DATA_AXIS, device_key, masked_sums
from gcp_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
MixFn = Callable[[jax.Array, jax.Array, jax.Array],
                 tuple[jax.Array, jax.Array]]
_MIX_TAG = 0x313C   # separates the mixing stream from the dropout stream


def _topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """(B,) 1.0 where the label is among the k largest logits."""
  _, top = lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, mesh: Mesh,
                    label_smoothing: float = 0.0, ema_decay: float = 0.0,
                    mix: MixFn | None = None,
                    smoothing_style: str = "uniform"
                    ) -> Callable[[TrainState, Batch],
                                  tuple[TrainState, Metrics]]:
  """Builds the compiled data-parallel training step.

  Args:
    model: the classifier; built with `bn_axis_name=DATA_AXIS` for
      synchronised BatchNorm (else per-device statistics, averaged into the
      running averages after the step).
    tx: the optimiser.
    schedule: step -> learning rate (only logged here; `tx` applies it).
    mesh: 1-D mesh with axis `DATA_AXIS`.
    label_smoothing: eps of the smoothed targets.
    ema_decay: decay of the weight average when `state.ema` is kept:
      ema <- decay * ema + (1 - decay) * (new params, new BN statistics).
    mix: None, or (key, images, labels) -> (images, soft targets (B, K))
      applied to each device's slice (`gcp_jax.data.mixing.mix_batch` with
      its settings bound; label smoothing is then folded into the targets
      by `mix`, not applied again). Train top-1 is then measured against
      the unmixed labels.
    smoothing_style: how eps is spread ("uniform" or "others",
      `gcp_jax.ops.losses.smoothed_targets`); without `mix` only.

  Returns:
    step(state, batch) -> (new state, metrics). `batch` = {'image': (B, H, W,
    3), 'label': (B,)} global arrays sharded over the mesh. Metrics are
    replicated scalars: `loss_sum`, `correct_sum`, `count`, `learning_rate`,
    `grad_norm`, and `dropcov_rate` (mean over devices) for DropCov heads.
  """

  def per_device(state: TrainState, batch: Batch):
    key = device_key(jax.random.fold_in(state.base_key(), state.step),
                     DATA_AXIS)

    images = batch["image"]
    if mix is not None:
      images, targets = mix(jax.random.fold_in(key, _MIX_TAG), images,
                            batch["label"])

    def loss_fn(params):
      logits, updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats},
          images, True, rngs={"dropout": key},
          mutable=["batch_stats", "intermediates"])
      if mix is None:
        losses = cross_entropy(logits, batch["label"], label_smoothing,
                               smoothing_style)
      else:
        losses = soft_target_cross_entropy(logits, targets)
      return jnp.mean(losses), (logits, updates)

    # Differentiate w.r.t. a per-device ("varying") copy of the replicated
    # parameters, so the gradient is this device's own, as under jax.pmap,
    # and the explicit pmean averages it. (The gradient w.r.t. a replicated
    # value would be summed over devices implicitly.)
    local_params = lax.pcast(state.params, DATA_AXIS, to="varying")
    (loss, (logits, updates)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(local_params)
    grads = lax.pmean(grads, DATA_AXIS)
    batch_stats = lax.pmean(updates["batch_stats"], DATA_AXIS)
    param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, param_updates),
        batch_stats=batch_stats, opt_state=opt_state)
    if state.ema is not None:
      new_state = new_state.replace(ema=jax.tree.map(
          lambda avg, new: ema_decay * avg + (1.0 - ema_decay) * new,
          state.ema, new_state.variables()))
    count = jnp.float32(logits.shape[0])
    metrics = {
        "loss_sum": lax.psum(loss * count, DATA_AXIS),
        "correct_sum": lax.psum(
            jnp.sum(_topk_correct(logits, batch["label"], 1)), DATA_AXIS),
        "count": lax.psum(count, DATA_AXIS),
        "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
        "grad_norm": optax.tree.norm(grads),
    }
    rate = updates.get("intermediates", {}).get("head", {}).get(
        "dropcov_rate")
    if rate is not None:
      metrics["dropcov_rate"] = lax.pmean(rate[0], DATA_AXIS)
    return new_state, metrics

  mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(DATA_AXIS)),
                         out_specs=(P(), P()))
  return backend.jit(mapped, donate_argnums=0)


def view_averaged_logits(model: nn.Module, variables, images: jax.Array
                         ) -> jax.Array:
  """Inference logits, (B, S, S, 3) -> (B, K); for multi-view input
  (B, V, S, S, 3) the mean of the V views' logits (fast-MPN-COV's 2-view
  and 10-crop evaluation averages logits, not probabilities)."""
  if images.ndim == 4:
    return model.apply(variables, images, False)
  batch, num_views = images.shape[:2]
  logits = model.apply(variables, images.reshape(-1, *images.shape[2:]),
                       False)
  return logits.reshape(batch, num_views, -1).mean(axis=1)


def make_eval_step(model: nn.Module, mesh: Mesh, use_ema: bool = False
                   ) -> Callable[[TrainState, Batch], Metrics]:
  """Builds the compiled data-parallel evaluation step.

  `batch` = {'image', 'label', 'mask'}; padded examples (mask 0) count
  nowhere, so every real example counts exactly once on any device count.
  Multi-view images (B, V, S, S, 3) are scored by their mean logits.
  `use_ema` evaluates the weight average `state.ema` instead.

  Returns:
    step(state, batch) -> replicated sums `loss_sum`, `top1_sum`, `top5_sum`
    and `count` (the number of real examples).
  """

  def per_device(state: TrainState, batch: Batch) -> Metrics:
    variables = state.ema_variables() if use_ema else state.variables()
    logits = view_averaged_logits(model, variables, batch["image"])
    k5 = min(5, logits.shape[-1])
    return masked_sums({
        "loss_sum": cross_entropy(logits, batch["label"], 0.),
        "top1_sum": _topk_correct(logits, batch["label"], 1),
        "top5_sum": _topk_correct(logits, batch["label"], k5),
    }, batch["mask"], DATA_AXIS)

  mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(DATA_AXIS)),
                         out_specs=P())
  return backend.jit(mapped)
