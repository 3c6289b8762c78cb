"""Test-wide JAX setup; runs before any test module imports JAX.

* 4 forced CPU devices, so multi-device code is exercised on this machine;
* numpy-style rank promotion raises (catches silent (B, C) vs (B, C, C)
  broadcasting);
* XLA's heavy optimisation passes are off and fusions are compiled with the
  faster-compiling emitters (`tests/xla_flags.py`): compiling is what tests
  spend their time on, so the suite runs several times faster; results stay
  within the tests' tolerances;
* compiled programs are shared through JAX's persistent compilation cache
  (a folder in the system temp dir; xdist workers and the tests' main.py
  subprocesses compile the same train steps again and again; the cache key
  covers the program, the flags and the JAX version, and the size limit
  turns on JAX's file locking for concurrent writers);
* TensorFlow (used later for tf.data) is kept off any GPU and, as in
  main.py, does not import Keras (TF_USE_LEGACY_KERAS; seconds of CPU saved
  in every test process and every main.py / notebook-kernel subprocess).
  Measurements: benchmarks/RESULTS.md, "Numbers from library and test
  docstrings".
"""

import os
import tempfile

from tests.xla_flags import xla_flags

NUM_TEST_DEVICES = 4

os.environ["XLA_FLAGS"] = xla_flags(NUM_TEST_DEVICES,
                                    os.environ.get("XLA_FLAGS", ""))
os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"gcp_jax_test_xla_cache_{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
