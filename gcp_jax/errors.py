"""The base class of errors caused by user input (config, data, checkpoints),
and `ConfigError`, which every layer that checks a config value raises.

`main.py` prints these as one line (`error: ...`) and exits with status 2
instead of a traceback; every subclass's message names the problem and the
fix. Programming errors keep their tracebacks.
"""


class GcpJaxError(Exception):
  """An error in what the user supplied; the message says how to fix it."""


class ConfigError(GcpJaxError, ValueError):
  """A configuration value that cannot work; the message says the fix."""
