"""read_metrics: the JSON-lines history of a workdir."""

import json

import pytest

from gcp_jax.train import reporting


def _write(path, lines):
  path.write_text("".join(line + "\n" for line in lines))


def test_last_write_of_a_step_wins_and_splits_are_separate(tmp_path):
  _write(tmp_path / reporting.METRICS_FILE, [
      json.dumps({"split": "eval", "step": 20, "top1": 0.5}),
      json.dumps({"split": "train", "step": 20, "loss": 1.0}),
      json.dumps({"split": "eval", "step": 40, "top1": 0.6}),
      # resumed from step 20: step 40 is evaluated again
      json.dumps({"split": "eval", "step": 40, "top1": 0.7}),
      json.dumps({"split": "eval", "step": 30, "top1": 0.65})])
  assert reporting.read_metrics(str(tmp_path), "eval") == [
      {"step": 20, "top1": 0.5}, {"step": 30, "top1": 0.65},
      {"step": 40, "top1": 0.7}]
  assert reporting.read_metrics(str(tmp_path), "train") == [
      {"step": 20, "loss": 1.0}]


def test_a_line_cut_off_at_the_end_is_skipped_but_not_in_the_middle(
    tmp_path):
  good = json.dumps({"split": "eval", "step": 1, "top1": 0.5})
  path = tmp_path / reporting.METRICS_FILE
  path.write_text(good + "\n" + '{"split": "eval", "st')
  assert reporting.read_metrics(str(tmp_path), "eval") == [
      {"step": 1, "top1": 0.5}]
  path.write_text('{"split": "eval", "st\n' + good + "\n")
  with pytest.raises(json.JSONDecodeError):
    reporting.read_metrics(str(tmp_path), "eval")
