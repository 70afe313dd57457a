"""scripts/make_results_doc.py: the verdict comparisons across documents."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAW = os.path.join(ROOT, "docs", "results", "full_cpu_avx512_2026-12-02")
V21 = os.path.join(ROOT, "docs", "results", "RESULTS_v2.1.md")


def _module():
  spec = importlib.util.spec_from_file_location(
      "make_results_doc", os.path.join(ROOT, "scripts", "make_results_doc.py"))
  m = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(m)
  return m


def _rows(section):
  """{claim id: cells} of a changed_since table."""
  out = {}
  for line in section.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 6 and cells[0].startswith("C"):
      out[cells[0]] = cells
  return out


def test_v2_verdicts_reads_main_then_preview():
  prev = _module().v2_verdicts(open(V21).read())
  # v2.1's main table judged C2, C3 and C5; the preview judged the rest.
  assert prev["C2 data asymmetry: a big MTL gain on a task needs far more "
              "data on the other tasks [growth with auxiliary data]"][:1] == (
                  "not supported",)
  c4 = [v for c, v in prev.items() if c.startswith("C4")]
  assert c4 == [("supported", "every decisive comparison favours it "
                 "(2 favours)", "quick preview")]
  # The main table's kind-less untested C1 row gives way to the preview's
  # three kinds.
  c1 = sorted(c.split("[")[1] for c in prev if c.startswith("C1"))
  assert c1 == ["equal compute]", "equal parameters]", "equal width]"]


def test_changed_since_lists_each_change_with_both_rules():
  m = _module()
  cur = json.load(open(os.path.join(RAW, "verdicts.json")))["verdicts"]
  rows = _rows(m.changed_since(m.v2_verdicts(open(V21).read()), cur, "v2.1"))
  growth = rows["C2 data asymmetry [growth with auxiliary data]"]
  assert growth[1:] == [
      "not supported",
      "every decisive comparison is against it (1 against, 3 inconclusive)",
      "inconclusive", "no decisive comparison (4 inconclusive)", "**yes**"]
  assert rows["C4 missing labels"][3] == "supported"
  assert rows["C4 missing labels"][5] == "scale only"
  assert rows["C2 context [gain, summed loss]"][5] == "no"
  # A claim new in this document shows as absent before.
  assert rows["C5 positive control [digits_multilabel]"][1] == "absent"


def test_main_writes_the_section(tmp_path):
  wd = tmp_path / "wd"
  wd.mkdir()
  for f in ("verdicts.json", "VERDICTS.md"):
    shutil.copyfile(os.path.join(RAW, f), wd / f)
  out = tmp_path / "docs"
  subprocess.run([sys.executable, os.path.join(ROOT, "scripts",
                                               "make_results_doc.py"),
                  str(wd), "--since", V21, "--out", str(out)], check=True,
                 capture_output=True)
  doc = (out / "RESULTS.md").read_text()
  assert "## What changed since the previous document" in doc
  assert f"--since {V21}" in doc
  assert any(f.endswith(".png") for f in os.listdir(out / "results"))
