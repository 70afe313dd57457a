"""Host allocator settings that keep XLA:CPU's per-step temporaries cheap.

XLA:CPU allocates a step's temporary buffers on every execution and frees them
afterwards. When they are large (a multi-run step: ~100 MB for two runs of a
3072->1024->1024 MLP), glibc serves them with a fresh `mmap` and returns them
with `munmap`. Every page is then faulted in again at the next step: 25k page
faults per step, which made that step take 42 ms instead of 22
(docs/PERFORMANCE.md). Keeping freed memory in the heap removes the faults.

Call `tune_allocator()` before JAX starts its threads; the `mtljax` command
does. Set MTLJAX_MALLOC_TUNING=0 to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

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
    True if the settings were applied; False off Linux/glibc or when
    MTLJAX_MALLOC_TUNING=0.
  """
  if os.environ.get("MTLJAX_MALLOC_TUNING", "1") == "0":
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
