"""--mode=robustness in process: a tiny model trained on the digits (32 px,
a few steps), evaluated on 2 corruptions x 2 severities corrupted on the
fly; resuming skips finished cells; bad input stops before writing."""

import csv
import io
import json
import os

import jax
import numpy as np
import pytest

from gcp_jax.data import corruptions
from gcp_jax.data.config import DataError
from gcp_jax.errors import ConfigError
from gcp_jax.train import loop, robustness
from tests.train.tiny import tiny_config

CELLS = (("gaussian_noise", "fog"), (1, 3))


def _config(digits_dir, **robust):
  config = tiny_config(digits_dir, num_epochs=1, num_train_steps=3)
  config.data.image_size = 32
  config.data.eval_batch_size = 64
  config.robustness.corruptions = CELLS[0]
  config.robustness.severities = CELLS[1]
  config.robustness.max_images_per_cell = 40
  config.robustness.update(robust)
  return config


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("digits")


@pytest.fixture(scope="module")
def trained(digits_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("robust"))
  config = _config(digits_dir)
  loop.train_and_evaluate(config, workdir)
  return config, workdir


def _listing(workdir):
  return sorted(os.path.relpath(os.path.join(p, f), workdir)
                for p, _, files in os.walk(workdir) for f in files)


@pytest.fixture(scope="module")
def first_run(trained):
  config, workdir = trained
  out = io.StringIO()
  results = robustness.run_robustness(config, workdir, stream=out)
  return results, out.getvalue()


def test_every_cell_evaluated_and_written(trained, first_run):
  config, workdir = trained
  results, log = first_run
  assert sorted(results["cells"]) == ["fog/1", "fog/3", "gaussian_noise/1",
                                      "gaussian_noise/3"]
  for cell in results["cells"].values():
    assert cell["count"] == 40            # padded batch of 64: 24 masked
    assert cell["error"] == pytest.approx(1 - cell["top1"])
  assert results["clean"]["count"] == 40
  # Written files agree with the returned results.
  directory = os.path.join(workdir, "robustness")
  with open(os.path.join(directory, "results.json")) as f:
    saved = json.load(f)
  assert saved["cells"] == results["cells"]
  rows = list(csv.DictReader(open(os.path.join(directory, "results.csv"))))
  assert [(r["corruption"], r["severity"]) for r in rows][:2] == [
      ("clean", "0"), ("gaussian_noise", "1")]
  assert float(rows[4]["error"]) == pytest.approx(
      results["cells"]["fog/3"]["error"], abs=1e-6)
  assert os.path.getsize(os.path.join(directory, "errors.png")) > 1000
  # Progress with ETA over the 5 passes.
  assert "5/5 (100%)" in log and "ETA" in log
  # An incomplete grid has no mCE, but the per-corruption means.
  assert results["summary"]["mce"] is None
  assert results["summary"]["mean_error"]["fog"] == pytest.approx(np.mean(
      [results["cells"]["fog/1"]["error"], results["cells"]["fog/3"]["error"]]))


def test_cell_equals_evaluating_the_library_output_by_hand(trained,
                                                            first_run):
  # The fog/3 batch is the library's output on the 32 px crop, normalised.
  config, workdir = trained
  from gcp_jax.data.robustness import create_robustness_data
  data = create_robustness_data(config.robustness, config.data,
                                class_names=tuple(str(i) for i in range(10)))
  batch = next(data.batches("fog", 3))
  clean = next(data.batches(None, 0))
  np.testing.assert_array_equal(batch["label"], clean["label"])
  index = int(np.sort(np.random.default_rng(0).permutation(450)[:40])[0])
  crop = np.uint8(np.rint(np.clip(
      (clean["image"][0] * np.array([0.229, 0.224, 0.225])
       + np.array([0.485, 0.456, 0.406])) * 255, 0, 255)))
  expected = corruptions.corrupt(crop, "fog", 3, corruptions.image_seed(
      0, "fog", 3, index))
  np.testing.assert_allclose(
      batch["image"][0],
      (expected / 255.0 - np.array([0.485, 0.456, 0.406]))
      / np.array([0.229, 0.224, 0.225]), atol=1e-5)


def test_rerun_skips_finished_cells(trained, first_run, monkeypatch):
  config, workdir = trained
  results, _ = first_run
  path = os.path.join(workdir, "robustness", "results.json")
  # An interrupted run: the file holds the clean pass and one cell only.
  with open(path) as f:
    saved = json.load(f)
  saved["cells"] = {"fog/3": saved["cells"]["fog/3"]}
  del saved["summary"]
  with open(path, "w") as f:
    json.dump(saved, f)
  evaluated = []
  from gcp_jax.data import robustness as data_robustness
  real = data_robustness.RobustnessData.batches

  def counting(self, corruption, severity):
    evaluated.append((corruption, severity))
    return real(self, corruption, severity)
  monkeypatch.setattr(data_robustness.RobustnessData, "batches", counting)
  out = io.StringIO()
  again = robustness.run_robustness(config, workdir, stream=out)
  assert evaluated == [("gaussian_noise", 1), ("gaussian_noise", 3),
                       ("fog", 1)]
  assert "1 already in" in out.getvalue() or "2 already in" in out.getvalue()
  for key, cell in results["cells"].items():   # deterministic: same values
    assert again["cells"][key]["error"] == pytest.approx(cell["error"])


@pytest.mark.parametrize("robust, error, message", [
    ({"corruptions": ("fog", "fgo")}, DataError, "Unknown corruption 'fgo'"),
    ({"severities": (1, 6)}, DataError, "Severity 6 is not one of 1..5"),
    ({"source": "folder", "data_dir": "MISSING"}, DataError,
     "Corruption folder .*gaussian_noise does not exist"),
    ({"seed": 1}, ConfigError, r"holds results of other settings .*'seed'"),
])
def test_bad_input_stops_before_writing(trained, first_run, robust, error,
                                        message, tmp_path):
  config, workdir = trained
  if robust.get("data_dir") == "MISSING":
    robust = {**robust, "data_dir": str(tmp_path / "imagenet-c")}
    os.makedirs(tmp_path / "imagenet-c")
  config = _config(config.data.data_dir, **robust)
  before = {p: os.path.getmtime(os.path.join(workdir, p))
            for p in _listing(workdir)}
  with pytest.raises(error, match=message):
    robustness.run_robustness(config, workdir, stream=io.StringIO())
  assert {p: os.path.getmtime(os.path.join(workdir, p))
          for p in _listing(workdir)} == before


def test_init_from_pytorch_file_gives_the_workdirs_errors(trained, first_run,
                                                           tmp_path):
  """The trained run exported to a PyTorch file and evaluated with
  --init_from in a fresh workdir: the same cells, the same errors."""
  pytest.importorskip("torch")
  from gcp_jax.train import restore
  config, workdir = trained
  results, _ = first_run
  path = restore.export_pytorch(config, workdir)
  imported = _config(config.data.data_dir, severities=(3,),
                     corruptions=("fog",))
  imported.init_from = path
  again = robustness.run_robustness(imported, str(tmp_path / "imported"),
                                    stream=io.StringIO())
  assert again["settings"]["init_from"] == path
  assert again["cells"]["fog/3"]["error"] == pytest.approx(
      results["cells"]["fog/3"]["error"])
  assert again["clean"]["error"] == pytest.approx(results["clean"]["error"])


@pytest.fixture(scope="module")
def imagenet_p(trained, tmp_path_factory):
  """A tiny ImageNet-P tree: PERTURBATION/CLASS/0.mp4 for the 10 digit
  classes, 5 frames of a 32 px val digit, brightness ramps and noise."""
  import cv2
  from gcp_jax.data.sources import FolderSource
  config, _ = trained
  root = tmp_path_factory.mktemp("imagenet_p")
  source = FolderSource(os.path.join(config.data.data_dir), process_index=0,
                        process_count=1, global_batch_size=1)
  paths, labels = source.eval_files()
  rng = np.random.default_rng(0)
  for name in ("brightness", "gaussian_noise"):
    for c in range(10):
      image = np.asarray(__import__("PIL.Image").Image.open(
          paths[np.flatnonzero(labels == c)[0]]).convert("RGB").resize(
              (32, 32)), np.float32)
      folder = root / name / str(c)
      folder.mkdir(parents=True)
      video = cv2.VideoWriter(str(folder / "0.mp4"),
                              cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32))
      for k in range(5):
        frame = (image * (1 - 0.15 * k) if name == "brightness"
                 else image + rng.normal(0, 40, image.shape))
        video.write(np.uint8(np.clip(frame, 0, 255))[..., ::-1].copy())
      video.release()
  return root


def test_imagenet_p_matches_unsharded_logits_and_resumes(trained,
                                                         imagenet_p,
                                                         tmp_path):
  from gcp_jax.analysis import robustness_metrics as rm
  from gcp_jax.data import perturbations
  from gcp_jax.train import restore
  from gcp_jax.train.steps import view_averaged_logits
  config, workdir = trained
  config = _config(config.data.data_dir, source="imagenet_p",
                   data_dir=str(imagenet_p),
                   perturbations=("brightness", "gaussian_noise"))
  config.data.eval_batch_size = 4     # 5 frames: 2 batches, 3 padded
  results = robustness.run_perturbations(config, workdir,
                                         stream=io.StringIO())
  restored = restore.restore_for_eval(config, workdir)
  variables = jax.device_get(restored.state.variables())
  for name, noise in (("brightness", False), ("gaussian_noise", True)):
    logits = np.stack([
        np.asarray(view_averaged_logits(restored.model, variables, frames))
        for frames, _ in perturbations.sequences(
            str(imagenet_p), name, tuple(str(i) for i in range(10)),
            image_size=32)])
    got = results["perturbations"][name]
    assert (got["sequences"], got["frames"]) == (10, 5)
    assert got["fp"] == pytest.approx(
        rm.flip_probability(logits.argmax(-1), noise))
    assert got["t5d"] == pytest.approx(rm.top5_distance(logits, noise))
  # Not vacuous: the noise moves the rankings.
  assert results["perturbations"]["gaussian_noise"]["t5d"] > 0
  assert results["mean_fp"] == pytest.approx(np.mean(
      [v["fp"] for v in results["perturbations"].values()]))
  # Resume: a finished perturbation is not read again.
  read = []
  real = perturbations.sequences

  def counting(root, name, *args, **kwargs):
    read.append(name)
    return real(root, name, *args, **kwargs)
  path = os.path.join(workdir, "robustness", "perturbations.json")
  saved = json.load(open(path))
  del saved["perturbations"]["gaussian_noise"]
  json.dump(saved, open(path, "w"))
  import unittest.mock
  with unittest.mock.patch.object(perturbations, "sequences", counting):
    again = robustness.run_perturbations(config, workdir,
                                         stream=io.StringIO())
  assert read == ["gaussian_noise"]
  assert again["perturbations"] == results["perturbations"]


def test_imagenet_p_bad_folder_is_one_line_before_writing(trained,
                                                          imagenet_p):
  config, workdir = trained
  config = _config(config.data.data_dir, source="imagenet_p",
                   data_dir=str(imagenet_p), perturbations=("rotate",))
  before = _listing(workdir)
  with pytest.raises(DataError, match=r"Perturbation folder .*rotate does "
                                      r"not exist"):
    robustness.run_perturbations(config, workdir, stream=io.StringIO())
  assert _listing(workdir) == before
