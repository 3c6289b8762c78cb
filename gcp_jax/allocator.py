"""glibc malloc settings for XLA:CPU training processes.

Why. XLA:CPU allocates the temporaries of a compiled program on every call
(`posix_memalign`; gigabytes for a ResNet-50 training step) and frees them
when the call ends. glibc serves a block this large with a fresh `mmap` and
gives it back with `munmap`, so every step faults its whole working set in
again: page faults and system time that keeping the memory avoids, which
makes the training step markedly faster on a CPU (measurements:
benchmarks/RESULTS.md, "Allocator: glibc keeping freed memory").

`keep_freed_memory()` makes glibc keep freed memory for reuse, through
`mallopt(3)`:

  * `M_ARENA_MAX = 1`: every thread allocates from the main heap. A thread's
    own arena cannot hold a block over 64 MiB, so glibc would `mmap` such
    blocks whatever the other settings;
  * `M_MMAP_MAX = 0`: large blocks come from the heap, not from `mmap`;
  * `M_TRIM_THRESHOLD = SIZE_MAX`: the heap is never trimmed.

This is `GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:
glibc.malloc.trim_threshold=...` set from inside the process. It has to run
while the process has a single thread, i.e. before jax, tensorflow or torch
are imported: a thread that already has an arena of its own keeps it.

Cost: the process keeps the memory it has freed, so its resident size stays
at its peak (a training process reaches that peak every step anyway), and
all threads share one heap lock. `main.py` calls this where
`gcp_jax.backend.keep_freed_memory_wanted()`: JAX can only use the CPU
(`cpu_only_jax`) and `GLIBC_TUNABLES` sets no `glibc.malloc.*` tunable (the
user's choice wins), unless `--nomalloc_keep_freed`. Other C libraries
(musl, macOS) are left alone.

Synopsis:
  from gcp_jax import allocator, backend   # first, before jax / tensorflow
  if backend.keep_freed_memory_wanted():
    allocator.keep_freed_memory()          # True if glibc took the settings
"""

import ctypes
import importlib.metadata
import importlib.util
import os
import platform

# mallopt(3) parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# mallopt's value is an int; glibc stores the trim threshold as a size_t,
# so -1 becomes SIZE_MAX ("never trim"). INT_MAX (2 GiB) would be too small:
# the training step's temporaries alone are larger.
NEVER = -1


def user_malloc_tunables() -> bool:
  """True if `GLIBC_TUNABLES` sets any `glibc.malloc.*` tunable."""
  return "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")


def cpu_only_jax() -> bool:
  """True if JAX will run on the CPU only: `JAX_PLATFORMS=cpu`, or (with
  JAX_PLATFORMS unset) no accelerator plugin installed (nothing in the
  `jax_plugins` namespace or entry points, no `libtpu`). Imports nothing
  heavy: this runs before jax is imported."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
  if platforms:
    return platforms == "cpu"
  return not (importlib.util.find_spec("jax_plugins")
              or importlib.util.find_spec("libtpu")
              or importlib.metadata.entry_points(group="jax_plugins"))


def _single_threaded() -> bool:
  """False if the process already runs other threads (Linux /proc)."""
  try:
    return len(os.listdir("/proc/self/task")) == 1
  except OSError:
    return True


def keep_freed_memory() -> bool:
  """Makes glibc keep freed memory for reuse instead of returning it to the
  operating system (one arena, no `mmap` for large blocks, no trimming).

  Returns:
    True if the settings were applied; False, with nothing changed, if the C
    library is not glibc or the process already runs other threads (then
    it is too late: see the module docstring).

  Raises:
    OSError: glibc refused a setting.
  """
  if platform.libc_ver()[0] != "glibc" or not _single_threaded():
    return False
  libc = ctypes.CDLL(None)   # the process's own symbols: glibc's mallopt
  for param, value in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0),
                       (M_TRIM_THRESHOLD, NEVER)):
    if libc.mallopt(param, value) != 1:
      raise OSError(f"glibc mallopt({param}, {value}) failed.")
  return True
