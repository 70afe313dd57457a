"""Host allocator settings that keep XLA:CPU's per-step temporaries cheap.

XLA:CPU allocates a step's temporary buffers on every execution and frees them
afterwards. When they are large (a multi-run step: ~100 MB for two runs of a
3072->1024->1024 MLP), glibc serves them with a fresh `mmap` and returns them
with `munmap`. Every page is then faulted in again at the next step: 25k page
faults per step, which made that step take 42 ms instead of 22
(docs/PERFORMANCE.md). Keeping freed memory in the heap removes the faults.

Call `tune_allocator()` before JAX starts its threads (later calls do not
help: the threads' arenas already exist); the `mtljax` command does. It only
acts when JAX will run on the CPU: JAX_PLATFORMS starts with "cpu", or no GPU
or TPU plugin is installed. Set MTLJAX_MALLOC_TUNING=0 to leave the allocator
alone, or =1 to apply it whatever the backend.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys

_ACCELERATOR_MODULES = ("jax_cuda12_plugin", "jax_cuda13_plugin",
                        "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def tune_allocator() -> bool:
  """Makes glibc keep freed memory for reuse instead of unmapping it.

  One arena (threads' own arenas are capped at 64 MiB, so large blocks would
  still be mapped), no mmap for large blocks, and no trimming of the heap.
  The cost: the process keeps its peak host memory until it exits.

  Returns:
    True if the settings were applied; False off Linux/glibc, when JAX will
    likely run on an accelerator, or when MTLJAX_MALLOC_TUNING=0.
  """
  setting = os.environ.get("MTLJAX_MALLOC_TUNING", "auto")
  if setting == "0":
    return False
  if setting != "1" and not _cpu_backend_expected():
    return False
  if not sys.platform.startswith("linux"):
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt  # absent on musl
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  results = [mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0),
             mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)]
  return all(r == 1 for r in results)


def _cpu_backend_expected() -> bool:
  """Whether JAX will run on the CPU, decided before JAX is imported."""
  platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
  if platforms:
    return platforms.split(",")[0] == "cpu"
  return not any(importlib.util.find_spec(m) for m in _ACCELERATOR_MODULES)
