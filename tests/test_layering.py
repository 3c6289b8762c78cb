"""The layering rule of gcp_jax/__init__.py, checked on the import graph.

ops (pure jnp) <- models (Flax) <- train / analysis <- studies; `data`
imports no other subpackage and `convert` only `models`; `analysis` does
not import `train` (train may use analysis). Top-level modules (backend,
errors, ...) import no subpackage, and every subpackage may use them.
Imports are read from the source (ast), inside functions too.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "gcp_jax")

ALLOWED = {
    "ops": set(),
    "models": {"ops"},
    "data": set(),
    "convert": {"models"},
    "analysis": {"ops", "models"},
    "train": {"ops", "models", "data", "convert", "analysis"},
    "studies": {"ops", "models", "data", "convert", "analysis", "train"},
}


def _unit(module: str) -> str:
  """'gcp_jax.models.heads' -> 'models'; top-level modules -> 'top'."""
  parts = module.split(".")
  if len(parts) > 1 and os.path.isdir(os.path.join(PACKAGE, parts[1])):
    return parts[1]
  return "top"


def import_edges() -> set[tuple[str, str, str]]:
  """(importing file, its unit, imported unit) for every gcp_jax import."""
  edges = set()
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(folder, name)
      module = os.path.relpath(path[:-3], ROOT).replace(os.sep, ".")
      with open(path) as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
          targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
          targets = [node.module]
          if node.module == "gcp_jax":   # from gcp_jax import ops, backend
            targets = [f"gcp_jax.{a.name}" for a in node.names]
        for target in targets:
          if target.startswith("gcp_jax."):
            edges.add((module, _unit(module), _unit(target)))
  return edges


def violations(edges: set[tuple[str, str, str]]) -> list[str]:
  bad = []
  for module, unit, target in sorted(edges):
    if unit == target or target == "top":
      continue
    if unit == "top" or target not in ALLOWED[unit]:
      bad.append(f"{module} ({unit}) imports {target}")
  return bad


def test_every_subpackage_has_a_rule():
  units = {u for _, u, _ in import_edges()} - {"top"}
  assert units <= set(ALLOWED)
  assert set(ALLOWED) <= {d for d in os.listdir(PACKAGE)
                          if os.path.isdir(os.path.join(PACKAGE, d))}


def test_no_layer_imports_from_above():
  edges = import_edges()
  assert len(edges) > 50       # the scan found the package's imports
  assert violations(edges) == []


def test_the_check_reports_an_upward_import():
  assert violations({("gcp_jax.analysis.x", "analysis", "train"),
                     ("gcp_jax.backend", "top", "ops"),
                     ("gcp_jax.train.y", "train", "analysis")}) == [
      "gcp_jax.analysis.x (analysis) imports train",
      "gcp_jax.backend (top) imports ops"]
