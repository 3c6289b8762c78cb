"""main.py --mode=probe end to end (subprocess, configs/digits_probe.py)."""

import json
import os
import subprocess
import sys

import pytest

from tests.xla_flags import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=300):
  return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT,
                        env=subprocess_env(None, PYTHONPATH=ROOT),
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("default")
  proc = _run("--config", "configs/digits_probe.py", "--mode=probe",
              "--workdir", str(workdir))
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(workdir / "probe_results.json") as f:
    return json.load(f), proc.stdout


def test_default_probe_accuracies(default_run):
  """Second-order descriptors of the real digits beat first-order averaging
  by a wide margin, and iSQRT-COV classifies held-out digits well."""
  data, stdout = default_run
  results = {r["representation"]: r for r in data["results"]}
  assert set(results) == {"gap", "none", "isqrt", "eig", "epn", "svpn", "bcnn"}
  assert results["isqrt"]["descriptor_dim"] == 11 * 12 // 2
  assert results["bcnn"]["descriptor_dim"] == 11 * 11
  assert results["isqrt"]["test_accuracy"] >= 0.95
  for name in ("none", "isqrt", "eig", "epn", "svpn", "bcnn"):
    assert results[name]["test_accuracy"] > results["gap"]["test_accuracy"] + 0.2
  assert "isqrt" in stdout


def test_unknown_config_key_is_an_error(tmp_path):
  proc = _run("--config", "configs/digits_probe.py", "--mode=probe",
              "--workdir", str(tmp_path), "--config.learning_rate=0.1")
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines() == [
      "error: --config.learning_rate is not a key of the config: "
      "--config.KEY=VALUE changes a key the config file sets; set a new key "
      "(e.g. an entry of config.model.backbone_options) in the config file."]
  assert not os.listdir(tmp_path)


def test_unknown_mode_is_an_error(tmp_path):
  proc = _run("--config", "configs/digits_probe.py", "--mode=fit",
              "--workdir", str(tmp_path))
  assert proc.returncode != 0
  assert ("one of <train|eval|summary|probe|export|robustness>"
          in proc.stderr)


def test_robustness_unknown_corruption_is_one_line_before_writing(tmp_path):
  proc = _run("--config", "configs/default.py", "--mode=robustness",
              "--workdir", str(tmp_path),
              "--config.robustness.corruptions=('fog', 'fgo')")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: Unknown corruption 'fgo'; choose from gaussian_noise, "
      "shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur, "
      "zoom_blur, snow, frost, fog, brightness, contrast, elastic_transform, "
      "pixelate, jpeg_compression, speckle_noise, gaussian_blur, spatter, "
      "saturate (config.robustness.corruptions)."]
  assert not os.listdir(tmp_path)
