"""Fixtures of the converter tests."""

import importlib

import pytest


@pytest.fixture
def tref():
  """tests.convert.torch_reference, or skip the test without torch."""
  pytest.importorskip("torch")
  return importlib.import_module("tests.convert.torch_reference")
