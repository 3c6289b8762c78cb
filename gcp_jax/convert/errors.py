"""Errors of the checkpoint converter; each message names the file, the
problem and the fix (`main.py` prints them as `error: ...`)."""

from gcp_jax.errors import GcpJaxError


class CheckpointFormatError(GcpJaxError, ValueError):
  """The file cannot be read: unknown format, truncated or corrupt."""


class MissingDependencyError(GcpJaxError, ImportError):
  """Reading or writing this format needs a package that is not installed."""


class ConvertOptionError(GcpJaxError, ValueError):
  """An option of the converter that has no meaning (the message lists the
  valid values)."""


class WeightMappingError(GcpJaxError, ValueError):
  """The file's arrays do not fit the model (architecture, head, d, classes)."""
