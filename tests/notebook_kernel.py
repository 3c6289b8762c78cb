"""Executes a notebook of notebooks/ top to bottom at the test scale, for
tests/test_notebook.py and tests/test_merits_notebook.py.

The kernel is a subprocess started by nbclient with the 'python3' kernelspec;
jupyter_client launches a spec whose command is `python` with the test's
interpreter (`sys.executable`), which a cell appended to the in-memory
notebook checks. Kernel environment: the test process's, so the kernel also
sees conftest's 4 forced CPU devices, rank-promotion errors and disabled
XLA optimisations (the notebooks run on a 4-device mesh; compiling
dominates at the test scale, so they run faster with the optimisations off:
benchmarks/RESULTS.md, "Numbers from library and test docstrings"), plus
GCP_NOTEBOOK_SCALE=test and GCP_NOTEBOOK_OUTPUT.
"""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 240
KERNEL_CHECK = "import sys; print('KERNEL:' + sys.executable)"


def execute(name: str, output_dir: Path) -> nbformat.NotebookNode:
  """notebooks/NAME executed at the test scale with outputs in
  `output_dir`; its last cell is the appended kernel check."""
  path = NOTEBOOKS / name
  nb = nbformat.read(path, as_version=4)
  nb.cells.append(nbformat.v4.new_code_cell(KERNEL_CHECK))
  client = NotebookClient(
      nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
      resources={"metadata": {"path": str(path.parent)}})
  env = dict(os.environ)
  env.update(GCP_NOTEBOOK_SCALE="test", GCP_NOTEBOOK_OUTPUT=str(output_dir))
  client.execute(env=env)
  return nb


def saved_without_outputs(name: str) -> bool:
  """Whether notebooks/NAME is stored with no outputs or counts."""
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  return all(not cell.outputs and cell.execution_count is None
             for cell in nb.cells if cell.cell_type == "code")


def stdout(cell) -> str:
  """The text a code cell printed."""
  return "".join(o.get("text", "") for o in cell.get("outputs", [])
                 if o.get("output_type") == "stream"
                 and o.get("name") == "stdout")


def shown_images(nb) -> int:
  """How many PNG images the executed notebook displayed."""
  return sum(1 for cell in nb.cells for o in cell.get("outputs", [])
             if "image/png" in o.get("data", {}))
