"""scripts/study_budget.py: each point's wall time from its two env records."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "study_budget.py")


def _point(d, exp, start, end, runs=3, cpu=None):
  os.makedirs(d)
  with open(os.path.join(d, "env.json"), "w") as f:
    json.dump({"time": start}, f)
  env = {"time": end}
  if cpu:
    env["cpu"] = {"kind": cpu}
  with open(os.path.join(d, "results.json"), "w") as f:
    json.dump({"experiment": exp, "config": {"train": {"steps": 800}},
               "env": env, "runs": [{}] * runs}, f)


def test_points_and_totals(tmp_path):
  _point(tmp_path / "e1" / "a", "e1", "2026-12-02T13:00:00+0000",
         "2026-12-02T13:06:00+0000", cpu="AMD EPYC (AVX-512)")
  _point(tmp_path / "e1" / "b", "e1", "2026-12-02T13:06:00+0000",
         "2026-12-02T13:09:00+0000")
  _point(tmp_path / "e2" / "c", "e2", "2026-12-02T13:59:30+0000",
         "2026-12-02T14:00:00+0000")
  # A summary beside the points is not a point.
  (tmp_path / "e2" / "report.json").write_text("{}")
  out = subprocess.run([sys.executable, SCRIPT, str(tmp_path)], check=True,
                       capture_output=True, text=True).stdout
  assert "| e1 | `a` | 3 | 800 | 6.0 |" in out
  assert "| e1 | 2 | 9.0 |" in out and "| e2 | 1 | 0.5 |" in out
  assert "| **all** | 3 | **9.5** |" in out
  assert "AMD EPYC (AVX-512), not recorded" in out


def test_a_missing_workdir_is_one_clear_error(tmp_path):
  p = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "nope")],
                     capture_output=True, text=True)
  assert p.returncode == 2 and "no such directory" in p.stderr
  assert "Traceback" not in p.stderr
