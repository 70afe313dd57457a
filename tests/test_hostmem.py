"""mtljax.hostmem: the allocator setting is applied on glibc, and can be off."""

import subprocess
import sys

import pytest

from mtljax import hostmem

_PROBE = """
import ctypes, resource, sys
from mtljax import hostmem
applied = hostmem.tune_allocator()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
n = 64 << 20
def touch():
  p = libc.malloc(n); libc.memset(p, 1, n); libc.free(p)
touch()  # first touch faults in any case
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  touch()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 5)
"""


def _probe(flag):
  out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True,
                       text=True, env={"MTLJAX_MALLOC_TUNING": flag,
                                       "PATH": "/usr/bin:/bin"},
                       check=True).stdout.split()
  return out[0] == "True", float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_large_blocks_are_reused_not_refaulted():
  applied, faults_on = _probe("1")
  if not applied:
    pytest.skip("no glibc mallopt here")
  off_applied, faults_off = _probe("0")
  assert not off_applied
  # 64 MiB freed and allocated again: unmapped and faulted back in (~16k pages)
  # by default; reused from the heap when tuned.
  assert faults_off > 10000
  assert faults_on < 0.05 * faults_off


def test_env_turns_it_off(monkeypatch):
  monkeypatch.setenv("MTLJAX_MALLOC_TUNING", "0")
  assert hostmem.tune_allocator() is False


def test_left_alone_when_an_accelerator_is_expected(monkeypatch):
  monkeypatch.delenv("MTLJAX_MALLOC_TUNING", raising=False)
  monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
  assert hostmem.tune_allocator() is False
