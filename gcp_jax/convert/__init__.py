"""Use the published GCP checkpoints: import PyTorch (fast-MPN-COV,
GCP_Optimization, DropCov) and MindSpore (TPAMI) weights into gcp-jax
ResNets, and export gcp-jax ResNets to PyTorch.

Synopsis:
  from gcp_jax.convert import load_pretrained, save_pytorch_checkpoint
  template = jax.eval_shape(lambda: model.init(key, images, False))
  variables, report = load_pretrained("model_best.pth.tar", template)
  print(report.summary())
  save_pytorch_checkpoint(variables, "back_to_pytorch.pth")

Modules, one job each:
  torch_files      read/write PyTorch files (torch imported lazily)
  mindspore_files  read/write MindSpore .ckpt with a protobuf schema in code
  naming           every reference's parameter names -> one canonical naming
  layout           canonical names <-> gcp-jax paths, OIHW <-> HWIO, ...
  architecture     recognise the network of a set of shapes (error messages)
  checkpoint_reader  read_checkpoint: detect the format, read, rename
  loader           fit_checkpoint (convert, check, report) and
                   load_pretrained = read_checkpoint then fit_checkpoint
  export           gcp-jax -> fast-MPN-COV state_dict

DropCov's transformer checkpoints (`Deit_drop_*`) load the same way into
`gcp_jax.models.dropcov_vit.DropCovViT` models, GCP_Optimization's
MobileNetV2 / ShuffleNetV2 into `mobilenet_v2_*` / `shufflenet_v2_*` and
the seed's MindSpore SE-ResNet-50 into `se_resnet50_*` (names: layout.py).
"""

from gcp_jax.convert.errors import CheckpointFormatError
from gcp_jax.convert.errors import ConvertOptionError
from gcp_jax.convert.errors import MissingDependencyError
from gcp_jax.convert.errors import WeightMappingError
from gcp_jax.convert.export import export_state_dict
from gcp_jax.convert.export import save_pytorch_checkpoint
from gcp_jax.convert.checkpoint_reader import CheckpointFile
from gcp_jax.convert.checkpoint_reader import detect_format
from gcp_jax.convert.checkpoint_reader import read_checkpoint
from gcp_jax.convert.loader import ImportReport
from gcp_jax.convert.loader import fit_checkpoint
from gcp_jax.convert.loader import load_pretrained
from gcp_jax.convert.mindspore_files import read_mindspore_checkpoint
from gcp_jax.convert.mindspore_files import write_mindspore_checkpoint
from gcp_jax.convert.torch_files import read_torch_checkpoint

__all__ = [
    "CheckpointFile", "CheckpointFormatError", "ConvertOptionError",
    "ImportReport",
    "MissingDependencyError", "WeightMappingError", "detect_format",
    "export_state_dict", "fit_checkpoint", "load_pretrained",
    "read_checkpoint", "read_mindspore_checkpoint", "read_torch_checkpoint",
    "save_pytorch_checkpoint", "write_mindspore_checkpoint",
]
