"""pytest plugin: the library makes the GPU's backend choices on this CPU
(`gcp_jax.backend.assume("gpu")` for the whole session), so the suite runs
the models and steps users get on a GPU:

  python -m pytest -p tests.gpu_variants tests/models tests/train ...

Tests of CPU-only behaviour (the YNNPACK compile option, `main.py`'s
allocator) still test the CPU; subprocesses (`main.py`, the notebook) are
not affected.
"""

from gcp_jax import backend

_GPU = backend.assume(backend.GPU)


def pytest_configure(config) -> None:
  del config
  _GPU.__enter__()


def pytest_unconfigure(config) -> None:
  del config
  _GPU.__exit__(None, None, None)
