"""The host's CPU, for the records that say which machine a figure is from.

The project's machines differ in the CPU features that decide which kernels
XLA can use (AVX2, AVX-512, AMX), and its figures differ with them: results
and benchmarks record the kind next to the numbers.
"""

from __future__ import annotations

import platform

# The CPU flags that decide which kernels XLA and PyTorch can use.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni",
             "amx_tile", "amx_bf16", "amx_int8")


def cpu_model() -> str:
  """/proc/cpuinfo's "model name" (platform.processor() elsewhere)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def cpu_features() -> dict:
  """{"model", "flags": the relevant ones present, "kind"}, from /proc/cpuinfo.

  "kind" names the machine kinds the project runs on ("AMD EPYC (AVX-512)",
  "Intel Xeon (AMX)"), so that figures can be filed per kind.
  """
  flags = set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          flags = set(line.split(":", 1)[1].split())
          break
  except OSError:
    pass
  have = [x for x in CPU_FLAGS if x in flags]
  model = cpu_model()
  vendor = ("AMD EPYC" if "EPYC" in model else "Intel Xeon" if "Xeon" in model
            else model)
  isa = ("AMX" if "amx_bf16" in have else "AVX-512" if "avx512f" in have
         else "AVX2" if "avx2" in have else "other")
  return {"model": model, "flags": have, "kind": f"{vendor} ({isa})"}
