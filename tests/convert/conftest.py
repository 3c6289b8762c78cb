"""Fixtures of the converter tests."""

import importlib

import pytest


@pytest.fixture
def tref():
  """tests.convert.reference_checkpoints (the torch reference models and
  checkpoint layouts), or skip the test without torch."""
  pytest.importorskip("torch")
  return importlib.import_module("tests.convert.reference_checkpoints")
