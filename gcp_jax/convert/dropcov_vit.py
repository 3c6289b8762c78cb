"""Import DropCov transformer checkpoints (`Deit_drop_*`, PyTorch) into
`gcp_jax.models.dropcov_vit.DropCovViT` variables.

Synopsis:
  from gcp_jax.convert import dropcov_vit
  template = jax.eval_shape(lambda: model.init(key, images, False))
  variables = dropcov_vit.load_dropcov_vit("Deit_drop_Small.pth.tar",
                                           template)

The reference names (DropCov `Transformers/src/transformer.py`, class `Vit`;
`nn.DataParallel`'s `module.` components are dropped first) and their
gcp-jax paths:

  visual_tokens.tokens.stem.0.{weight,bias}    tokenizer/stem
  visual_tokens.tokens.stage.{2b}.denselayer{i+1}.conv{1,2}.weight
                                    tokenizer/block{b}_layer{i}_conv{1,2}
  visual_tokens.tokens.stage.{2b+1}.norm.*     tokenizer/transition{b}_bn
  visual_tokens.tokens.stage.{2b+1}.conv.weight tokenizer/transition{b}_conv
  visual_tokens.tokens.transition.{weight,bias} tokenizer/proj
  cls_token                                    cls_token
  blocks.{i}.norm{1,2}.*                       block{i}/norm{1,2}
  blocks.{i}.attn.{qkv,proj}.*                 block{i}/attn/{qkv,proj}
  blocks.{i}.mlp.fc{1,2}.*                     block{i}/mlp_fc{1,2}
  norm.*                                       norm
  classifier.representation.wr.weight          head/reduce (projections=3)
  classifier.visual_fc.*, classifier.cls_fc.*  head/fc, head/fc_cls

Conv kernels OIHW -> HWIO, Linear weights transposed, LayerNorm and
BatchNorm weight -> scale, running_mean/var -> batch_stats mean/var.
`pos_embed` is not a parameter in gcp-jax: it is checked against the fixed
sinusoid table instead; `num_batches_tracked` is ignored. Any other
difference between the file and the template is a WeightMappingError that
lists the names.
"""

import os
import re
from typing import Any, Mapping

import numpy as np

from gcp_jax.convert import naming, torch_files
from gcp_jax.convert.errors import WeightMappingError
from gcp_jax.models import dropcov_vit

_TOK = r"visual_tokens\.tokens\."
_LEAF = {"weight": "kernel", "bias": "bias", "running_mean": "mean",
         "running_var": "var"}
_NORM_LEAF = {"weight": "scale", "bias": "bias"}
IGNORED = re.compile(r"(^|\.)num_batches_tracked$")


def _dense_layer(m: re.Match) -> tuple[str, ...]:
  block, layer, conv = int(m[1]) // 2, int(m[2]) - 1, m[3]
  return ("tokenizer", f"block{block}_layer{layer}_conv{conv}", "kernel")


def _transition(m: re.Match) -> tuple[str, ...]:
  t = int(m[1]) // 2
  if m[2] == "conv.weight":
    return ("tokenizer", f"transition{t}_conv", "kernel")
  leaf = m[2].split(".")[1]
  return ("tokenizer", f"transition{t}_bn",
          _NORM_LEAF.get(leaf) or _LEAF[leaf])


# Reference name pattern -> gcp-jax path (collection is batch_stats for the
# running statistics, params otherwise).
_RULES = (
    (_TOK + r"stem\.0\.(weight|bias)$",
     lambda m: ("tokenizer", "stem", _LEAF[m[1]])),
    (_TOK + r"stage\.(0|2|4)\.denselayer(\d+)\.conv([12])\.weight$",
     _dense_layer),
    (_TOK + r"stage\.(1|3|5)\.(norm\.(?:weight|bias|running_mean|"
     r"running_var)|conv\.weight)$", _transition),
    (_TOK + r"transition\.(weight|bias)$",
     lambda m: ("tokenizer", "proj", _LEAF[m[1]])),
    (r"cls_token$", lambda m: ("cls_token",)),
    (r"blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)$",
     lambda m: (f"block{m[1]}", m[2], _NORM_LEAF[m[3]])),
    (r"blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)$",
     lambda m: (f"block{m[1]}", "attn", m[2], _LEAF[m[3]])),
    (r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$",
     lambda m: (f"block{m[1]}", f"mlp_{m[2]}", _LEAF[m[3]])),
    (r"norm\.(weight|bias)$", lambda m: ("norm", _NORM_LEAF[m[1]])),
    (r"classifier\.representation\.wr\.weight$",
     lambda m: ("head", "reduce", "kernel")),
    (r"classifier\.visual_fc\.(weight|bias)$",
     lambda m: ("head", "fc", _LEAF[m[1]])),
    (r"classifier\.cls_fc\.(weight|bias)$",
     lambda m: ("head", "fc_cls", _LEAF[m[1]])),
)


def _jax_path(name: str) -> tuple[str, tuple[str, ...]] | None:
  """(collection, path) of a reference name, or None if it has none."""
  for pattern, path_of in _RULES:
    m = re.match(pattern, name)
    if m:
      path = path_of(m)
      stats = path[-1] in ("mean", "var")
      return ("batch_stats" if stats else "params"), path
  return None


def _to_jax(value: np.ndarray, leaf: str) -> np.ndarray:
  if leaf == "kernel" and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)            # OIHW -> HWIO
  if leaf == "kernel" and value.ndim == 2:
    return value.T                                # (out, in) -> (in, out)
  return value


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
             ) -> dict[tuple[str, ...], Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flatten(value, prefix + (key,)))
    else:
      out[prefix + (key,)] = value
  return out


def _nest(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for path, value in flat.items():
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return out


def convert_state_dict(state: Mapping[str, np.ndarray], template: Any
                       ) -> dict[str, Any]:
  """Reference state_dict (name -> array) -> variables shaped as
  `template` ({"params", "batch_stats"} of a DropCovViT, arrays or
  ShapeDtypeStructs). Raises WeightMappingError on missing, unexpected or
  mis-shaped entries, or a `pos_embed` that is not the sinusoid table."""
  want = {(c,) + p: v for c in ("params", "batch_stats")
          for p, v in _flatten(template.get(c, {})).items()}
  got, unexpected, problems = {}, [], []
  for raw, value in state.items():
    name = naming.strip_data_parallel(raw)
    value = np.asarray(value)
    if IGNORED.search(name):
      continue
    if name == "pos_embed":
      table = dropcov_vit.sinusoid_table(value.shape[-2], value.shape[-1])
      if not np.allclose(value.reshape(table.shape), table, atol=1e-6):
        problems.append("pos_embed is not the fixed sinusoid table")
      continue
    found = _jax_path(name)
    if found is None:
      unexpected.append(name)
      continue
    collection, path = found
    got[(collection,) + path] = (name, _to_jax(value, path[-1]))
  missing = sorted("/".join(k) for k in set(want) - set(got))
  unexpected += sorted(got[k][0] for k in set(got) - set(want))
  for key in set(want) & set(got):
    name, value = got[key]
    if tuple(value.shape) != tuple(want[key].shape):
      problems.append(f"{name} {tuple(value.shape)} -> {'/'.join(key)} "
                      f"{tuple(want[key].shape)}")
  if missing or unexpected or problems:
    raise WeightMappingError(
        "The checkpoint does not fit this DropCovViT: "
        + "; ".join(part for part in (
            f"missing {', '.join(missing)}" if missing else "",
            f"unexpected {', '.join(sorted(unexpected))}" if unexpected
            else "",
            f"mismatched {', '.join(sorted(problems))}" if problems else "")
            if part)
        + ". Check the preset (deit_drop_tiny/small/base), the head and "
          "num_classes.")
  flat = {k: np.asarray(v, np.float32) for k, (_, v) in got.items()
          if k in want}
  return _nest(flat)


def load_dropcov_vit(path: str | os.PathLike, template: Any
                     ) -> dict[str, Any]:
  """Reads a PyTorch DropCov transformer checkpoint (a state_dict, or a dict
  holding one, e.g. timm's `state_dict`) and converts it (see
  `convert_state_dict`)."""
  return convert_state_dict(torch_files.read_torch_checkpoint(path),
                            template)
