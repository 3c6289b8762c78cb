"""DropCov's own transformer (`deit_drop_*`) against a PyTorch transcription
of the reference (torch_reference/dropcov_vit.py), and the import of its
checkpoints through `gcp_jax.convert.load_pretrained`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcp_jax.convert import (CheckpointFormatError, WeightMappingError,
                             export_state_dict, load_pretrained)
from gcp_jax.models import create_model, dropcov_vit

torch = pytest.importorskip("torch")
from torch_reference import dropcov_vit as ref  # noqa: E402

# Reference presets (DropCov Transformers/src/transformer.py:113-167):
# embed_dim, depth, heads, mlp_ratio, DropCov heads H, width w.
PRESETS = {"deit_drop_tiny": (240, 12, 4, 2.5, 6, 14),
           "deit_drop_small": (384, 12, 6, 4.0, 6, 24),
           "deit_drop_base": (768, 12, 12, 4.0, 12, 24)}
TINY_TEST = (32, 2, 2, 2.5, 2, 4)


def _count(tree) -> int:
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _template(model, size):
  return jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), False))


def _save(state, path):
  torch.save({"epoch": 3, "state_dict": state}, path)
  return path


def _import(torch_model, model, size, path):
  """The torch model's weights as the gcp-jax model's variables, through a
  checkpoint file (as timm's saver writes it) and load_pretrained."""
  variables, report = load_pretrained(
      _save(torch_model.state_dict(), path), _template(model, size))
  assert not report.not_loaded and "pos_embed" in report.skipped
  assert report.file_architecture == "DropCov transformer"
  return variables


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_parameter_count_is_the_references(name):
  """Trainable parameters equal the reference model's (its fixed pos_embed
  excluded; with it, the number its main.py prints)."""
  with torch.device("meta"):
    torch_model = ref.build(*PRESETS[name])
  trainable = sum(p.numel() for p in torch_model.parameters()
                  if p.requires_grad)
  ours = _count(_template(create_model(f"{name}_dropcov", 1000),
                          224)["params"])
  assert ours == trainable
  d = PRESETS[name][0]
  assert ours + 197 * d == sum(p.numel() for p in torch_model.parameters())
  if name == "deit_drop_small":                 # DropCov README: 25.6 M
    assert round(ours / 1e6, 1) == 25.6


def test_reference_preset_numbers():
  """Hand count of Deit_drop_Tiny + DropCov: tokenizer, blocks, head."""
  d, hidden = 240, 600
  dense = lambda c: sum(  # noqa: E731
      (c + 16 * i) * 32 + 32 * 16 * 9 for i in range(6))
  tokenizer = (3 * 9 * 64 + 64 + dense(64) + 2 * 160 + 160 * 128
               + 2 * (dense(128) + 2 * 224 + 224 * 128) + 128 * d + d)
  block = 4 * d + 3 * d * d + d * d + d + 2 * d * hidden + hidden + d
  head = 3 * 6 * 14 * d + (6 * 14 ** 2 + 1) * 1000 + (d + 1) * 1000
  params = _template(create_model("deit_drop_tiny_dropcov", 1000), 224)
  assert _count(params["params"]) == tokenizer + d + 12 * block + 2 * d + head


def _assert_same_logits(torch_model, model, variables, x) -> None:
  """Eval-mode logits of both on NHWC `x` agree to 1e-4 (relative)."""
  with torch.no_grad():
    want = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  got = np.asarray(jax.jit(lambda v, x: model.apply(v, x, False))(
      variables, x))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(
      want).max())


@pytest.mark.parametrize("size", [64, 112])
def test_logits_equal_the_torch_reference(size, tmp_path):
  """Imported weights, eval mode, float32: the same logits (rtol 1e-4).
  112 px exercises the reference's unpooled last transition."""
  torch_model = ref.randomize(ref.build(*TINY_TEST, num_classes=10,
                                        image_size=size), seed=1).eval()
  model = create_model("deit_drop_tiny_test_dropcov", 10, image_size=size)
  variables = _import(torch_model, model, size, tmp_path / "ref.pth.tar")
  x = np.random.default_rng(0).standard_normal((2, size, size, 3))
  x = x.astype(np.float32)
  _assert_same_logits(torch_model, model, variables, x)


def test_backbone_facts():
  """Sinusoid positions as a constant, no qkv bias, LayerNorm eps 1e-5,
  N(0, 0.02) Linear init with zero biases, 4 x 4 tokens at 64 px."""
  table = dropcov_vit.sinusoid_table(3, 4)
  np.testing.assert_allclose(table[1], [np.sin(1), np.cos(1),
                                        np.sin(1e-2), np.cos(1e-2)],
                             rtol=1e-6)
  model = create_model("deit_drop_tiny_test_dropcov", 10)
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 64, 64, 3)),
                  jnp.float32)
  variables = model.init(jax.random.key(0), x, False)
  params = variables["params"]
  assert "pos_embed" not in params
  assert set(params["block0"]["attn"]["qkv"]) == {"kernel"}
  assert float(jnp.abs(params["head"]["fc"]["bias"]).max()) == 0.0
  assert float(jnp.abs(params["block0"]["mlp_fc1"]["bias"]).max()) == 0.0
  qkv = np.asarray(params["block0"]["attn"]["qkv"]["kernel"])
  assert 0.017 < qkv.std() < 0.023
  tokens = model.apply(variables, x, False, method="stem")
  assert tokens.shape == (2, 1 + 16, 32)
  assert model.bind(variables).norm.epsilon == 1e-5


def test_training_step_updates_batch_stats_and_uses_dropout():
  model = create_model("deit_drop_tiny_test_dropcov", 10)
  x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 64, 64, 3)),
                  jnp.float32)
  variables = model.init(jax.random.key(0), x, False)
  run = jax.jit(lambda v, key: model.apply(
      v, x, True, rngs={"dropout": key}, mutable=["batch_stats"]))
  out1, new = run(variables, jax.random.key(1))
  out2, _ = run(variables, jax.random.key(2))
  assert bool(jnp.all(jnp.isfinite(out1))) and not np.allclose(out1, out2)
  before = variables["batch_stats"]["tokenizer"]["stage1_norm"]["mean"]
  after = new["batch_stats"]["tokenizer"]["stage1_norm"]["mean"]
  assert not np.allclose(before, after)


def test_import_errors_name_the_problem(tmp_path):
  torch_model = ref.build(*TINY_TEST, num_classes=10, image_size=64)
  state = {f"module.{k}": v for k, v in torch_model.state_dict().items()}
  template = _template(create_model("deit_drop_tiny_test_dropcov", 10), 64)
  load_pretrained(_save(state, tmp_path / "dp.pth"), template)  # module.
  broken = dict(state)
  del broken["module.blocks.1.attn.qkv.weight"]
  broken["module.blocks.1.attn.qkv.bias"] = torch.zeros(96)
  with pytest.raises(WeightMappingError,
                     match=r"(?s)DropCov transformer.*missing in file \(1\): "
                           r"params/block1/attn/qkv/kernel.*unexpected in "
                           r"file \(1\): module\.blocks\.1\.attn\.qkv\.bias"):
    load_pretrained(_save(broken, tmp_path / "broken.pth"), template)
  with pytest.raises(WeightMappingError, match=r"head/fc/kernel"):
    load_pretrained(tmp_path / "dp.pth", _template(
        create_model("deit_drop_tiny_test_dropcov", 7), 64))
  learned = dict(state, **{"module.pos_embed": state["module.pos_embed"] + 1})
  with pytest.raises(CheckpointFormatError, match="sinusoid"):
    load_pretrained(_save(learned, tmp_path / "learned.pth"), template)


def test_imported_arrays_are_the_files(tmp_path):
  torch_model = ref.randomize(ref.build(*TINY_TEST, num_classes=10,
                                        image_size=64), seed=3)
  model = create_model("deit_drop_tiny_test_dropcov", 10)
  variables = _import(torch_model, model, 64, tmp_path / "ref.pth.tar")
  np.testing.assert_array_equal(
      variables["params"]["block1"]["attn"]["qkv"]["kernel"],
      torch_model.blocks[1].attn.qkv.weight.detach().numpy().T)
  np.testing.assert_array_equal(
      variables["params"]["tokenizer"]["stage2_denselayer3_conv2"]["kernel"],
      torch_model.visual_tokens.tokens.stage[2]["denselayer3"].conv2.weight
      .detach().numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      variables["batch_stats"]["tokenizer"]["stage5_norm"]["var"],
      torch_model.visual_tokens.tokens.stage[5].norm.running_var.numpy())


@pytest.mark.slow
def test_full_tiny_preset_at_224_equals_the_torch_reference(tmp_path):
  """Deit_drop_Tiny + DropCov at 224 px with the reference's own
  initialisation (about 10 s on a CPU)."""
  torch_model = ref.build(*PRESETS["deit_drop_tiny"]).eval()
  model = create_model("deit_drop_tiny_dropcov", 1000)
  variables = _import(torch_model, model, 224, tmp_path / "tiny.pth.tar")
  x = np.random.default_rng(4).standard_normal((2, 224, 224, 3))
  x = x.astype(np.float32)
  _assert_same_logits(torch_model, model, variables, x)


def test_bfloat16_backbone():
  model = create_model("deit_drop_tiny_test_cls", 10, dtype=jnp.bfloat16)
  x = jnp.asarray(np.random.default_rng(5).standard_normal((2, 64, 64, 3)),
                  jnp.float32)
  variables = model.init(jax.random.key(0), x, False)
  out = model.apply(variables, x, False)
  assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))
  assert variables["params"]["block0"]["attn"]["qkv"]["kernel"].dtype == (
      jnp.float32)


def test_export_refuses_the_transformer():
  """Import only: the ResNet exporter must not write DropCov-transformer
  variables under fast-MPN-COV names."""
  model = create_model("deit_drop_tiny_test_cls", 10)
  variables = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype),
                           _template(model, 64))
  with pytest.raises(WeightMappingError,
                     match="no fast-MPN-COV name: .*/tokenizer/"):
    export_state_dict(variables)
