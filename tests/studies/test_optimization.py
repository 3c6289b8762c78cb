"""The study's configs, config loading and Hessian numbers (the training
and the whole pipeline run in tests/test_notebook.py)."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from gcp_jax.studies import optimization
from tests.analysis import tiny


def _without(config, *keys):
  d = config.to_dict()
  for key in keys:
    d.pop(key)
  return d


def test_digits_runs_differ_only_in_the_head():
  settings = optimization.preset("default")
  base = default.get_config()
  before = base.to_dict()
  runs = optimization.digits_runs(settings, base, "/out")
  assert base.to_dict() == before
  assert [(r.label, r.config.model.head, r.config.model.representation)
          for r in runs] == [("GAP", "gap", "isqrt"), ("iSQRT", "gcp", "isqrt"),
                             ("DropCov", "dropcov", "isqrt")]
  assert [r.workdir for r in runs] == [
      os.path.join("/out", "runs", label) for label in ("GAP", "iSQRT",
                                                        "DropCov")]
  for run in runs:
    assert run.config.model.backbone == "resnet_tiny"
    assert run.config.model.backbone_options.to_dict() == {"width": 16}
  for run in runs[1:]:
    assert run.config.model.dim == 32
  shared = _without(runs[0].config, "model")
  assert all(_without(r.config, "model") == shared for r in runs)
  config = runs[1].config
  assert config.num_epochs == settings.num_epochs
  assert config.data.image_size == settings.image_size
  assert config.schedule.to_dict() == {
      "name": "step", "milestones": settings.lr_milestones, "gamma": 0.1}
  assert config.gradient_probe.to_dict() == {
      "every_steps": settings.probe_every, "eta_min": 0.1, "eta_max": 75.0,
      "num_etas": settings.num_etas, "bn_mode": "batch"}


def test_no_milestones_means_a_constant_learning_rate():
  config = optimization.digits_config(optimization.preset("test"),
                                      default.get_config(),
                                      "resnet_tiny_isqrt")
  assert config.schedule.to_dict() == {"name": "constant"}


def test_unknown_preset_lists_the_choices():
  with pytest.raises(ValueError, match="default, test"):
    optimization.preset("huge")


def test_config_from_workdir_restores_the_training_config(tmp_path):
  config = optimization.digits_config(optimization.preset("default"),
                                      default.get_config(),
                                      "resnet_tiny_dropcov")
  (tmp_path / "config.json").write_text(config.to_json_best_effort())
  assert optimization.config_from_workdir(str(tmp_path)).to_dict() == \
      config.to_dict()
  with pytest.raises(FileNotFoundError, match="config.json"):
    optimization.config_from_workdir(str(tmp_path / "missing"))


def test_file_label_keeps_names_file_safe():
  assert optimization.file_label("ResNet-50 iSQRT (d=128)") == \
      "ResNet-50_iSQRT_d_128_"


def _head_loss(head, hidden_params, x, y):
  """Mean cross-entropy of the MLP written out by hand, as a function of
  the head's (kernel (10, 4), bias (4,))."""
  kernel, bias = head
  h = jnp.tanh(x @ hidden_params["kernel"] + hidden_params["bias"][None])
  logits = h @ kernel + bias[None]
  logp = logits - jax.scipy.special.logsumexp(logits, axis=1, keepdims=True)
  return -jnp.mean(logp[jnp.arange(len(y)), y])


def test_hessian_summary_matches_the_explicit_head_hessian():
  model = tiny.MLP()
  rng = np.random.default_rng(0)
  batches = [{"image": rng.standard_normal((8, 6)).astype(np.float32),
              "label": rng.integers(0, 4, 8).astype(np.int32)}
             for _ in range(2)]
  variables = jax.jit(model.init, static_argnums=2)(
      jax.random.key(1), batches[0]["image"], False)
  settings = dataclasses.replace(
      optimization.preset("test"), hessian_block="head",
      lanczos_steps=44, hutchinson_probes=300)
  result = optimization.hessian_summary(model, variables, batches, settings)

  p = variables["params"]
  x = np.concatenate([b["image"] for b in batches])
  y = np.concatenate([b["label"] for b in batches])
  head = (p["head"]["kernel"], p["head"]["bias"])
  blocks = jax.hessian(_head_loss)(head, p["hidden"], x, y)
  dense = np.block([[np.reshape(blocks[i][j], (np.size(head[i]),
                                               np.size(head[j])))
                     for j in range(2)] for i in range(2)])
  eigenvalues = np.linalg.eigvalsh(dense.astype(np.float64))

  assert (result.dim, result.num_samples, result.num_batches) == (44, 16, 2)
  assert (result.block, result.bn_mode) == ("head", "running")
  assert result.top_eigenvalue == pytest.approx(eigenvalues[-1], rel=1e-3)
  assert abs(result.trace - eigenvalues.sum()) < 3 * result.trace_stderr
  assert result.trace_stderr > 0


def test_landscape_grids_must_contain_the_weights():
  with pytest.raises(ValueError, match="odd number"):
    dataclasses.replace(optimization.preset("test"), landscape_points_2d=4)
