"""The base class of errors caused by user input (config, data, checkpoints).

`main.py` prints these as one line (`error: ...`) and exits with status 2
instead of a traceback; every subclass's message names the problem and the
fix. Programming errors keep their tracebacks.
"""


class GcpJaxError(Exception):
  """An error in what the user supplied; the message says how to fix it."""
