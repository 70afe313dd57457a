"""scripts/bench.py --smoke runs every section and writes the JSON it promises.

No timing assertions: the smoke sizes only check that each code path runs
(numbers at those sizes mean nothing, and CI machines are noisy).
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("b1", "b2", "b2b", "b3", "b4", "b5", "b6", "b7", "b8", "opt",
            "layers", "methods")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("bench")
  out = tmp / "bench.json"
  env = dict(os.environ)
  # The bench runs on the real devices; the test session's 8 forced host
  # devices (conftest.py) must not leak into it.
  env["XLA_FLAGS"] = " ".join(
      f for f in env.get("XLA_FLAGS", "").split()
      if not f.startswith("--xla_force_host_platform_device_count"))
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "bench.py"), "--smoke",
       "--out", str(out), "--data-dir", str(tmp / "data")],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(out.read_text()), proc.stdout


def test_every_section_is_in_the_json(smoke):
  res, _ = smoke
  assert res["smoke"] is True
  assert not res["errors"]
  for name in SECTIONS:
    assert name in res, name
  assert {"cpu", "nproc", "jax", "backend"} <= set(res["env"])


def test_sections_have_their_fields(smoke):
  res, _ = smoke
  assert "mtljax" in res["b1"]["rows"]
  assert res["b1"]["rows"]["mtljax"]["examples_per_s"] > 0
  assert "torch eager" in res["b1"]["rows"]  # a number, or why not
  assert res["b2"]["step_matmuls"] and res["b2"]["best_peak_gflops_per_s"] > 0
  assert {"mtljax float32", "mtljax bfloat16"} <= set(res["b2b"]["rows"])
  for model in ("mlp", "cnn"):
    by_r = res["b3"]["models"][model]["by_R"]
    assert all({"vmap", "unroll", "sequential_ms", "dispatch_ms"} <= set(p)
               for p in by_r.values())
  assert res["b4"]["overhead"] is not None
  assert res["b5"]["data_parallel"]["agree"] and res["b5"]["bf16"]["agree"]
  assert res["b6"]["rows"]
  assert res["b7"]["mtljax_one_process_s"] > 0
  assert {"custom matmul backward", "custom conv backward",
          "non-finite guard (vs none)",
          "fused first stage (vs each run's own)",
          "fused first stage, share_k k=1 (vs each run's own)",
          "looped task copies, share_k k=1 (vs vmapped: grouped convs)"
          } <= set(res["opt"]["rows"])
  lay = res["layers"]
  assert len(lay["rows"]) == 2 and lay["sum_of_pieces_ms"] > 0
  assert set(lay["run_step_ms"]) == {"one run", "study, plain scan",
                                     "study, fused first stage"}
  assert lay["rows"]["stage 0: 8x8, 3->2"]["dx_ms"] == 0  # never computed
  assert res["b2b"]["peak_bf16_matmul_gflops_per_s"]
  b8 = res["b8"]
  assert {"num_examples", "image_shape", "peak_rss_mb", "rss_mb",
          "batches_per_s", "eval_pass_s", "label_scan_s",
          "in_memory_equivalent_gb", "under_4gb", "cpu"} <= set(b8)
  assert b8["peak_rss_mb"] > 0 and b8["streaming"] is True
  assert b8["image_shape"] == [64, 64, 3]
  assert {"pipeline", "batches", "eval"} <= set(b8["rss_mb"])
  m = res["methods"]
  assert m["cells"] and not m["failed"]
  for cell in m["cells"].values():
    rows = cell["rows"]
    assert {"EW", "EW (again)"} <= set(rows) and len(rows) > 2
    assert all(r["step_ms"] > 0 and r["ratio"] > 0 for r in rows.values())
    # Every method row is judged against its goal (met or not).
    assert all(r["met"] is not None for r in rows.values()
               if r["kind"] != "ew")


def test_prints_a_table(smoke):
  _, stdout = smoke
  assert "B1 step throughput" in stdout and "B7 study" in stdout
  assert "B8 input pipeline memory" in stdout
  assert "methods: each MTL method's step against EW's" in stdout
