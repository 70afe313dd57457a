"""The host record (mtljax/run/host.py) in env.json and results.json."""

from mtljax.run import host
from mtljax.run import writers


def test_cpu_kind_names_the_vendor_and_the_widest_isa(monkeypatch, tmp_path):
  info = tmp_path / "cpuinfo"
  info.write_text("model name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                  "flags\t\t: fpu avx2 fma avx512f amx_tile amx_bf16\n")
  real_open = open
  monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(
      info if p == "/proc/cpuinfo" else p, *a, **k))
  got = host.cpu_features()
  assert got == {"model": "Intel(R) Xeon(R) Platinum 8480+",
                 "flags": ["avx2", "fma", "avx512f", "amx_tile", "amx_bf16"],
                 "kind": "Intel Xeon (AMX)"}


def test_environment_records_the_cpu():
  env = writers.environment()
  assert set(env["cpu"]) == {"model", "flags", "kind"}
  assert env["cpu_count"] >= 1
