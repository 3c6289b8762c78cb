"""Import a published PyTorch or MindSpore checkpoint into gcp-jax variables.

Synopsis:
  model = create_model("resnet50_isqrt", num_classes=1000)
  template = jax.eval_shape(lambda: model.init(key, images, False))
  variables, report = load_pretrained("mpncovresnet50.pth", template)
  logits = model.apply(variables, images, False)

  # fine-tune on 200 classes: the classifier is left to a fresh init
  fresh = model.init(key, images, False)
  variables, report = load_pretrained(path, fresh, ignore=("head/fc/.*",))
  # report.not_loaded == ("params/head/fc/bias", "params/head/fc/kernel")

Every template leaf is either loaded from the file or listed in
`report.not_loaded`; nothing is silently re-initialised. Loading fails
(`WeightMappingError`) on any missing, unexpected or shape-mismatched array
unless each matches an `ignore` pattern.

What is converted: names (`gcp_jax.convert.naming`), layouts
(`gcp_jax.convert.layout`), the MindSpore 1001-way head (extra class
dropped or kept), and the BatchNorm epsilon: gcp-jax uses 1e-5, so a file
trained with another epsilon gets `var + (eps_file - 1e-5)`, which makes
`(x - mean) / sqrt(var + eps)` identical.

What the weights cannot tell (the caller builds the right model):
* the representation: iSQRT, plain covariance, EIG, ... over the same d
  have the same parameters;
* layer4's stride: fast-MPN-COV's generic `-a resnet50 --representation
  MPNCOV` path keeps torchvision's stride-2 layer4, so its checkpoints need
  `create_model(..., last_stride=2)`; `mpncovresnet50/101`, GCP_Optimization
  and DropCov use stride 1 (the GCP default);
* DropCov's own GAP baseline (`CNNs/models/ResNet.py`) has its residual
  additions commented out (docs/method.md §11, item 5): its weights load but
  compute another function in gcp-jax's (residual) ResNet;
* MindSpore's Bottleneck ResNets (50/101/152) pad stride-2 convolutions and
  the max-pool 'same'-style (the odd pixel after); their weights compute
  MindSpore's network only in a model built with `padding='same'` (a note
  in the report says so; the training loop demands it).
"""

import dataclasses
import os
import re
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from gcp_jax.convert import architecture
from gcp_jax.convert import layout
from gcp_jax.convert import naming
from gcp_jax.convert.checkpoint_reader import CheckpointFile, read_checkpoint
from gcp_jax.convert.errors import WeightMappingError

SHOWN = 10          # keys listed per category in an error message
FC_PATTERN = "head/fc/.*"
TOKENIZER = "params/tokenizer/stem/kernel"   # DropCov's transformer
# GCP_Optimization's MobileNetV2 and ShuffleNetV2 (their last 1x1 conv).
MOBILE_MARKERS = ("params/conv_last/conv/kernel", "params/conv5/conv/kernel")


@dataclasses.dataclass(frozen=True)
class ImportReport:
  """What `load_pretrained` did; paths are gcp-jax paths
  ('params/stem/conv1/kernel'), file entries are the names in the file.

  Attributes:
    path: the checkpoint file.
    format: 'pytorch' or 'mindspore'.
    file_architecture: the network the file's shapes describe.
    loaded: template paths filled from the file.
    not_loaded: template paths NOT filled (ignored missing or mismatched
      leaves): they hold the template's own leaf (a fresh initialisation if
      the template was concrete, a ShapeDtypeStruct otherwise) and must come
      from a fresh init before use.
    missing: template paths the file has no array for (all ignored).
    unexpected: file entries that fit no template leaf (all ignored).
    mismatched: 'path: file shape vs model shape' (all ignored).
    skipped: file entries deliberately not imported (optimizer state,
      `num_batches_tracked`, the extra class of a MindSpore head).
    notes: value changes besides layout (BN epsilon), and caveats.
  """
  path: str
  format: str
  file_architecture: str
  loaded: tuple[str, ...]
  not_loaded: tuple[str, ...]
  missing: tuple[str, ...]
  unexpected: tuple[str, ...]
  mismatched: tuple[str, ...]
  skipped: tuple[str, ...]
  notes: tuple[str, ...]

  def summary(self) -> str:
    """A few lines for logs."""
    lines = [f"Imported {len(self.loaded)} arrays from {self.path} "
             f"({self.format}): {self.file_architecture}."]
    if self.skipped:
      lines.append(f"  skipped {len(self.skipped)} entries: "
                   f"{_listing(self.skipped)}")
    for title, keys in (("ignored missing", self.missing),
                        ("ignored unexpected", self.unexpected),
                        ("ignored shape mismatches", self.mismatched)):
      if keys:
        lines.append(f"  {title} ({len(keys)}): {_listing(keys)}")
    if self.not_loaded:
      lines.append(f"  NOT loaded, take from a fresh init "
                   f"({len(self.not_loaded)}): {_listing(self.not_loaded)}")
    lines += [f"  note: {n}" for n in self.notes]
    return "\n".join(lines)


def _listing(keys: Sequence[str]) -> str:
  """The first SHOWN keys, then '... and N more'."""
  shown = ", ".join(keys[:SHOWN])
  return shown + (f" ... and {len(keys) - SHOWN} more"
                  if len(keys) > SHOWN else "")


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _matches(patterns: Sequence[str], *keys: str | None) -> bool:
  """True if a pattern fully matches a key or a key's tail that starts
  after a '/' or '.' ('fc/.*' matches 'params/head/fc/kernel')."""
  for key in keys:
    if key is None:
      continue
    tails = [key] + [key[i + 1:] for i, c in enumerate(key) if c in "/."]
    if any(re.fullmatch(p, t) for p in patterns for t in tails):
      return True
  return False


def _module_path(path: str) -> str:
  """"batch_stats/layer1/block0/bn1/var" -> "layer1/block0/bn1"."""
  return path.split("/", 1)[-1].rsplit("/", 1)[0]


def _convert(named: naming.Named, eps: dict[str, float],
             model_eps: Mapping[str, float]):
  """Canonical arrays -> gcp-jax paths and layouts; each BN variance
  shifted by (file epsilon - model epsilon), both 1e-5 unless `eps`
  (canonical module -> epsilon) and `model_eps` (module path -> epsilon)
  say otherwise.

  Returns:
    ({path: (file name, array)}, [(file name, None)] unmapped,
     {path: (file name, file shape)} arrays whose rank fits no layout,
     number of BN variances shifted).
  """
  converted, unmapped, bad_rank, shifted = {}, [], {}, 0
  for canonical, source, array in named:
    target = layout.jax_path(canonical)
    if target is None:
      unmapped.append((source, None))
      continue
    path, kind = target
    if path in converted:
      unmapped.append((f"{source} (duplicate of {converted[path][0]})", path))
      continue
    if array.ndim != kind.torch_ndim:
      bad_rank[path] = (source, array.shape)
      continue
    array = kind.to_jax(array)
    if canonical.endswith(".running_var"):
      module = canonical.removesuffix(".running_var")
      delta = (eps.get(module, naming.GCP_JAX_BN_EPSILON)
               - model_eps.get(_module_path(path),
                               naming.GCP_JAX_BN_EPSILON))
      if delta:
        array = np.maximum(array.astype(np.float64) + delta,
                           0.0).astype(array.dtype)
        shifted += 1
    converted[path] = (source, array)
  return converted, unmapped, bad_rank, shifted


def fit_checkpoint(checkpoint: CheckpointFile, template: Any, *,
                   ignore: Sequence[str] = (),
                   model_bn_epsilons: Mapping[str, float] | None = None
                   ) -> tuple[Any, ImportReport]:
  """The second half of `load_pretrained`: converts the arrays of a read
  file to the template's paths and layouts and checks them (see there for
  `template`, `ignore`, `model_bn_epsilons`, the result and
  `WeightMappingError`)."""
  path, fmt, eps = checkpoint.path, checkpoint.format, checkpoint.eps
  extra_class = checkpoint.extra_class
  named, skipped = checkpoint.named, checkpoint.skipped
  converted, unmapped, bad_rank, shifted = _convert(
      named, eps, model_bn_epsilons or {})

  flat, treedef = jax.tree_util.tree_flatten_with_path(template)
  paths = ["/".join(_key_name(k) for k in p) for p, _ in flat]
  shapes = {p: tuple(leaf.shape) for p, (_, leaf) in zip(paths, flat)}

  missing = [p for p in paths if p not in converted and p not in bad_rank]
  unexpected = unmapped + [(converted[p][0], p) for p in converted
                           if p not in shapes]
  unexpected += [(s, p) for p, (s, _) in bad_rank.items() if p not in shapes]
  mismatched = {p: converted[p][1].shape for p in paths
                if p in converted and converted[p][1].shape != shapes[p]}
  mismatched.update({p: s for p, (_, s) in bad_rank.items() if p in shapes})

  open_missing = [p for p in missing if not _matches(ignore, p)]
  open_unexpected = [(s, p) for s, p in unexpected
                     if not _matches(ignore, s, p)]
  open_mismatched = {p: s for p, s in mismatched.items()
                     if not _matches(ignore, p)}
  file_arch = architecture.describe(
      {p: a.shape for p, (_, a) in converted.items()})
  if open_missing or open_unexpected or open_mismatched:
    raise WeightMappingError(_mismatch_message(
        path, fmt, file_arch, architecture.describe(shapes), open_missing,
        open_unexpected, open_mismatched, shapes, ignore,
        extra_class))

  leaves = []
  for p, (_, leaf) in zip(paths, flat):
    if p in converted and p not in mismatched:
      leaves.append(np.asarray(converted[p][1], dtype=leaf.dtype))
    else:
      leaves.append(leaf if isinstance(leaf, jax.ShapeDtypeStruct)
                    else np.asarray(leaf))
  not_loaded = tuple(p for p in paths
                     if p not in converted or p in mismatched)
  report = ImportReport(
      path=path, format=fmt,
      file_architecture=_family(file_arch, converted),
      loaded=tuple(p for p in paths if p not in not_loaded),
      not_loaded=not_loaded,
      missing=tuple(missing),
      unexpected=tuple(_unexpected_text(s, p) for s, p in unexpected),
      mismatched=tuple(f"{p}: file {mismatched[p]} vs model {shapes[p]}"
                       for p in mismatched),
      skipped=tuple(skipped),
      notes=_notes(fmt, file_arch, shifted, eps, extra_class))
  return jax.tree_util.tree_unflatten(treedef, leaves), report


def load_pretrained(path: str | os.PathLike, template: Any, *,
                    ignore: Sequence[str] = (),
                    extra_class: str = "last",
                    format: str = "auto",  # pylint: disable=redefined-builtin
                    bn_epsilon: float | None = None,
                    rename: Sequence[tuple[str, str]] = (),
                    model_bn_epsilons: Mapping[str, float] | None = None
                    ) -> tuple[Any, ImportReport]:
  """Loads a reference checkpoint into the structure of `template`.

  Args:
    path: PyTorch (`.pth`, `.pth.tar`: fast-MPN-COV, GCP_Optimization,
      DropCov, or `export.save_pytorch_checkpoint`) or MindSpore `.ckpt`.
    template: the model's variables {'params': ..., 'batch_stats': ...},
      concrete (`model.init(...)`) or abstract (`jax.eval_shape`).
    ignore: regexes for problems to accept; each is matched in full against
      a gcp-jax path or file name, or any tail of one after '/' or '.'
      (`'head/fc/.*'` or `'fc/.*'`: leave the classifier to a fresh init).
    extra_class: MindSpore files only, the 1001st output of an ImageNet
      classifier: "last" drops output 1000 (the seed's and MindSpore's
      model zoo ResNets, trained on image-folder labels 0..999), "first"
      drops output 0 (a background class, labels 1..1000), "keep" keeps
      all 1001.
    format: 'auto' (from the first bytes), 'pytorch' or 'mindspore'.
    bn_epsilon: BatchNorm epsilon the file was trained with; None = the
      format's default (PyTorch 1e-5; MindSpore model zoo: 1e-4, except 1e-5
      for the stem and shortcut BNs of ResNet-18/34).
    rename: (regex, replacement) pairs applied with `re.sub` to the names
      in the file before anything else, for spellings not handled here.
    model_bn_epsilons: {BN module path: epsilon} of the model
      (`gcp_jax.models.layers.batch_norm_epsilons`); None = 1e-5 in every
      BN. Each running variance is shifted by (file epsilon - model
      epsilon), so the normalisation is the file's.

  Returns:
    (variables, report): variables has exactly the template's tree
    structure; loaded leaves are numpy arrays of the template leaf's dtype
    and shape; leaves listed in `report.not_loaded` are the template's own.

  Raises:
    CheckpointFormatError: unreadable file (unknown format, truncated).
    MissingDependencyError: a PyTorch file without torch installed.
    WeightMappingError: un-ignored missing / unexpected / mismatched arrays,
      e.g. a ResNet-18 file for a ResNet-50 model.
  """
  checkpoint = read_checkpoint(
      path, extra_class=extra_class, format=format,
      bn_epsilon=bn_epsilon, rename=rename)
  return fit_checkpoint(checkpoint, template, ignore=ignore,
                        model_bn_epsilons=model_bn_epsilons)


def _unexpected_text(source: str, path: str | None) -> str:
  return f"{source} -> {path}" if path else source


def _notes(fmt: str, file_arch: architecture.Architecture | None,
           shifted: int, eps: dict[str, float],
           extra_class: str) -> tuple[str, ...]:
  notes = []
  if shifted:
    values = ", ".join(f"{e:g}" for e in sorted(set(eps.values())))
    notes.append(f"{shifted} BatchNorm variances shifted by (file epsilon - "
                 f"model epsilon) (file epsilons: {values or '1e-05'}) so "
                 f"that normalisation is unchanged")
  if fmt == "mindspore":
    notes.append({
        "last": "classifier output 1000 (never a training target of an "
                "image-folder 1001-way head) dropped",
        "first": "classifier output 0 (background) dropped",
        "keep": "classifier kept with all outputs"}[extra_class])
    if file_arch and file_arch.bottleneck:
      notes.append("MindSpore Bottleneck ResNets pad stride-2 convolutions "
                   "and the max-pool asymmetrically ('same'): build the "
                   "model with padding='same' to compute MindSpore's "
                   "network (PyTorch padding computes another one)")
  return tuple(notes)


def _family(file_arch: architecture.Architecture | None,
            converted: Mapping[str, tuple[str, Any]]) -> str:
  """The file's network in words: the ResNet `file_arch` describes, else
  its family recognised by the converted names."""
  if file_arch is not None:
    return str(file_arch)
  if TOKENIZER in converted:
    return "DropCov transformer"
  if MOBILE_MARKERS[0] in converted:
    return "MobileNetV2"
  if MOBILE_MARKERS[1] in converted:
    return "ShuffleNetV2"
  return "not a ResNet"


def _mismatch_message(
    path: str, fmt: str, file_arch: architecture.Architecture | None,
    model_arch: architecture.Architecture | None, missing: list[str],
    unexpected: list[tuple[str, str | None]],
    mismatched: dict[str, tuple[int, ...]],
    shapes: dict[str, tuple[int, ...]], ignore: Sequence[str],
    extra_class: str) -> str:
  """Names the problem (wrong architecture or which arrays), the arrays not
  covered by `ignore` (first SHOWN of each kind and the count) and the
  fix."""
  def section(title, keys):
    return f"\n  {title} ({len(keys)}): {_listing(keys)}" if keys else ""

  unexpected_text = [_unexpected_text(s, p) for s, p in unexpected]
  mismatched_text = [f"{p}: file {s} vs model {shapes[p]}"
                     for p, s in mismatched.items()]
  if model_arch is None and TOKENIZER in shapes:
    head = (f"{path} does not fit this DropCov transformer (the arrays "
            f"below).")
    fix = ("Fix: build the preset the checkpoint was trained as "
           "(create_model('deit_drop_{tiny,small,base}_dropcov', "
           "num_classes)); or pass ignore=(regex, ...) for leaves to leave "
           "at their fresh initialisation.")
  elif model_arch is None and any(m in shapes for m in MOBILE_MARKERS):
    head = f"{path} does not fit this MobileNetV2 / ShuffleNetV2 model."
    fix = ("Fix: build the network the checkpoint was trained as "
           "(create_model('mobilenet_v2_{gap,isqrt,isqrt_d128}' or "
           "'shufflenet_v2_{gap,isqrt}', num_classes)); or pass "
           "ignore=(regex, ...) for leaves to leave at their fresh "
           "initialisation.")
  elif model_arch is None:
    head = (f"{path} cannot be loaded into this model: it is not a ResNet "
            f"(only ResNet GAP / GCP / DropCov, SE-ResNet, MobileNetV2 and "
            f"ShuffleNetV2 models can import reference checkpoints).")
    fix = "Fix: build one of those models from gcp_jax.models."
  elif file_arch is not None and (
      file_arch.backbone() != model_arch.backbone()
      or (file_arch.head, file_arch.dim) != (model_arch.head,
                                             model_arch.dim)):
    call = file_arch.registry_call()
    head = f"Wrong architecture: {path} does not hold the model's network."
    fix = ("Fix: build the model the checkpoint was trained as"
           + (f", e.g. {call}" if call else "") + ".")
  else:
    head = f"{path} does not fit the model."
    only_fc = all(_matches([FC_PATTERN], p) for p in
                  list(missing) + list(mismatched)) and not unexpected
    kept = extra_class == "keep"
    if (only_fc and fmt == "mindspore" and file_arch is not None
        and model_arch.num_classes == file_arch.num_classes
        + (-1 if kept else 1)):
      if kept:
        fix = ('Fix: pass extra_class="last" (MindSpore ImageNet heads have '
               '1001 outputs for 1000 classes; "first" if output 0 is a '
               'background class).')
      else:
        fix = (f'Fix: pass extra_class="keep" to keep all '
               f'{file_arch.num_classes + 1} outputs (extra_class='
               f'"{extra_class}" dropped one).')
    elif only_fc and file_arch and file_arch.num_classes is not None:
      fix = (f"Fix: to fine-tune on {model_arch.num_classes} classes, pass "
             f"ignore=('{FC_PATTERN}',) and take the classifier from a fresh "
             f"init (report.not_loaded lists it); to evaluate, build the "
             f"model with {file_arch.num_classes} classes.")
    else:
      fix = ("Fix: use the model the checkpoint was trained as; or pass "
             "ignore=(regex, ...) for leaves to leave at their fresh "
             "initialisation, or rename=((regex, replacement), ...) for file "
             "names spelt differently.")
  body = ""
  if file_arch is not None or model_arch is not None:
    body += (f"\n  file:  {file_arch or 'no ResNet weights recognised'}"
             f"\n  model: {model_arch or 'not a ResNet'}")
  if ignore:
    body += f"\n  not covered by ignore={tuple(ignore)!r}:"
  body += (section("missing in file", missing)
           + section("unexpected in file", unexpected_text)
           + section("shape mismatch", mismatched_text))
  return f"{head}{body}\n  {fix}"
