"""gcp_jax.allocator: with glibc keeping freed memory, a large block
allocated again, from any thread, does not page-fault; with glibc's
defaults it does."""

import os
import platform
import subprocess
import sys

import pytest

from gcp_jax import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Allocates, touches and frees a 256 MiB block three times, each time in a
# new thread, and prints the minor page faults of each round. A process of
# its own: the settings are process-wide, and must be made while the
# process has one thread (numpy's BLAS starts threads at import). In "late"
# mode a thread is started first, so keep_freed_memory must refuse.
SCRIPT = """
import resource, sys, threading
from gcp_jax import allocator
if sys.argv[1] == "late":
  threading.Thread(target=threading.Event().wait, args=(5,),
                   daemon=True).start()
  print(allocator.keep_freed_memory())
  sys.exit()
if sys.argv[1] == "keep":
  assert allocator.keep_freed_memory()
import numpy as np

def allocate(faults):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  block = np.empty(64 << 20, np.float32)
  block.fill(1.0)
  del block
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

faults = []
for _ in range(3):
  thread = threading.Thread(target=allocate, args=(faults,))
  thread.start()
  thread.join()
print(*faults)
"""


def _run(mode: str) -> str:
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env["PYTHONPATH"] = ROOT
  return subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env,
                        capture_output=True, text=True, timeout=60,
                        check=True).stdout


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_memory_is_reused_without_page_faults():
  default = [int(n) for n in _run("default").split()]
  keep = [int(n) for n in _run("keep").split()]
  # glibc's default: every round faults the block in again (256 MiB are
  # 128 huge pages or 65536 small ones)
  assert min(default) >= 100, default
  # kept: only the first round faults; later threads reuse the memory
  assert keep[0] >= 100 and max(keep[1:]) < 20, keep
  # too late once another thread runs: nothing is changed
  assert _run("late").strip() == "False"


def test_user_tunables_are_detected(monkeypatch):
  monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_max=0")
  assert allocator.user_malloc_tunables()
  monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX2")
  assert not allocator.user_malloc_tunables()
  monkeypatch.delenv("GLIBC_TUNABLES")
  assert not allocator.user_malloc_tunables()


@pytest.mark.parametrize("platforms, expected", [
    ("cpu", True), (" CPU ", True), ("cuda", False), ("cpu,cuda", False),
    ("tpu", False)])
def test_jax_platforms_decides_cpu_only(monkeypatch, platforms, expected):
  monkeypatch.setenv("JAX_PLATFORMS", platforms)
  assert allocator.cpu_only_jax() is expected
