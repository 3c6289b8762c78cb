"""benchmarks/gpu_check.py on the CPU with its tiny models: the head rows
agree with the torch reference and are compared with their anchor; the
whole script runs end to end without importing TensorFlow."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from benchmarks import gpu_check  # noqa: E402
from tests.xla_flags import subprocess_env  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_head_rows_check_against_torch_and_compare_with_the_anchor():
  rows = gpu_check.bench_heads(gpu_check.TINY, repeats=1)
  assert [r.key for r in rows] == ["head_torch", "head_newton_schulz",
                                   "head_eigh"]
  assert all(r.ms > 0 and r.images == gpu_check.TINY.batch for r in rows)
  ratio = gpu_check.speedups(rows)
  assert set(ratio) == {"head_newton_schulz", "head_eigh"}
  assert ratio["head_eigh"] == pytest.approx(rows[0].ms / rows[2].ms)
  assert all(r.compile_s > 0 for r in rows[1:])
  table = gpu_check.report(rows, matmul_tflops=1.0)
  assert "1.00x (anchor)" in table and table.count("\n") == 4
  met = {t["target"]: t["met"] for t in gpu_check.targets(rows)}
  assert met["step_fp32 >= 2.0x its anchor"] is False   # no such row here


def test_tiny_run_end_to_end_without_tensorflow(tmp_path):
  out = tmp_path / "check.json"
  code = ("import runpy, sys; sys.argv = ['gpu_check.py', '--tiny', "
          f"'--steps', '1', '--json', {str(out)!r}]; "
          "runpy.run_path('benchmarks/gpu_check.py', run_name='__main__'); "
          "assert 'tensorflow' not in sys.modules, 'TensorFlow imported'")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                        env=subprocess_env(1, PYTHONPATH=ROOT),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert len(result["rows"]) == 11 and len(result["targets"]) == 10
  assert "| what | ms |" in proc.stdout
