"""The report on a synthetic sweep whose right answers are known by design.

Two widths × arms mtl/stl × 3 seeds × 2 learning rates. Validation makes
lr=1e-3 the winner for mtl and, for stl, lr=1e-2 on task "a" but 1e-3 on the
others; test values at a losing rate are absurd (0.1), so picking one shows.
"""

import json
import os

import numpy as np
import pytest

from mtljax.analysis import report
from mtljax.analysis import stats

TASKS = ["a", "b", "c"]
SEEDS = [0, 1, 2]
LRS = [1e-3, 1e-2]
WIDTHS = [4, 64]
# MTL − STL per seed at the chosen rates: known paired differences.
DIFF = {4: np.array([-0.03, -0.04, -0.05]), 64: np.array([0.02, 0.03, 0.04])}


def _metrics(per_task):
  per_task = {t: {"auc": v, "ap": v - 0.1, "acc": None, "loss": 1 - v}
              for t, v in zip(TASKS, per_task)}
  mean = {k: (None if k == "acc" else
              float(np.mean([d[k] for d in per_task.values()])))
          for k in ("auc", "ap", "acc", "loss")}
  return {"per_task": per_task, "mean": mean}


def _runs(width):
  runs = []
  for arm in ("mtl", "stl"):
    for lr in LRS:
      for s in SEEDS:
        if arm == "mtl":
          good = [lr == 1e-3] * 3
        else:
          good = [lr == 1e-2, lr == 1e-3, lr == 1e-3]
        val = [0.8 + 0.01 * s if g else 0.7 for g in good]
        base = 0.80 + 0.01 * s + 0.02 * np.arange(3)  # stl's test values
        test = base + (DIFF[width][s] if arm == "mtl" else 0.0)
        test = [float(x) if g else 0.1 for x, g in zip(test, good)]
        runs.append({"arm": arm, "mode": arm, "seed": s, "learning_rate": lr,
                     "width": width, "param_count": 100 * width,
                     "best_step": [10] * 3, "val": _metrics(val),
                     "test": _metrics(test)})
  return runs


def _results(width, condition=None):
  return {"schema_version": 1, "experiment": "e2_width_sweep",
          "condition": ({"model.width": width} if condition is None
                        else condition),
          "dataset": {"name": "toy", "task_names": TASKS},
          "selection_metric": "auc", "config": {}, "env": {},
          "runs": _runs(width)}


def _write(path, obj):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "results.json"), "w") as f:
    json.dump(obj, f)
  return path


@pytest.fixture(name="sweep_dir")
def fixture_sweep_dir(tmp_path):
  for w in WIDTHS:
    _write(str(tmp_path / "sweep" / f"width={w}"), _results(w))
    os.makedirs(tmp_path / "sweep" / f"width={w}" / "checkpoints" / "10")
  return str(tmp_path / "sweep")


def test_load_results_finds_sweep_points_once(sweep_dir):
  results = report.load_results([sweep_dir, os.path.join(sweep_dir,
                                                         "width=4")])
  assert sorted(r["condition"]["model.width"] for r in results) == WIDTHS
  assert all(r["source"].endswith("results.json") for r in results)


def test_load_results_errors(tmp_path):
  with pytest.raises(ValueError, match="no such file"):
    report.load_results([str(tmp_path / "missing")])
  os.makedirs(tmp_path / "empty")
  with pytest.raises(ValueError, match="empty: no results.json"):
    report.load_results([str(tmp_path / "empty")])
  bad = tmp_path / "bad"
  os.makedirs(bad)
  (bad / "results.json").write_text("{not json")
  with pytest.raises(ValueError, match="bad.*not a readable"):
    report.load_results([str(bad)])
  old = _results(4)
  old["schema_version"] = 0
  with pytest.raises(ValueError, match="old.*schema_version 0"):
    report.load_results([_write(str(tmp_path / "old"), old)])
  broken = _results(4)
  del broken["runs"][2]["test"]
  with pytest.raises(ValueError, match="run 2 lacks test"):
    report.load_results([_write(str(tmp_path / "broken"), broken)])


def test_lr_selection_and_known_paired_diff(sweep_dir):
  summary = report.summarize(report.load_results([sweep_dir]))
  json.dumps(summary, allow_nan=False)  # strict JSON: NaN became None
  conds = summary["conditions"]
  assert [c["condition"]["model.width"] for c in conds] == WIDTHS
  for c, w in zip(conds, WIDTHS):
    mtl, stl = c["arms"]["mtl"], c["arms"]["stl"]
    assert mtl["lr"]["chosen"] == {t: 1e-3 for t in TASKS}
    assert not mtl["lr"]["per_task_selection"]
    assert stl["lr"]["chosen"] == {"a": 1e-2, "b": 1e-3, "c": 1e-3}
    assert stl["lr"]["per_task_selection"]
    assert set(stl["lr"]["val_score"]) == set(TASKS)
    assert mtl["n_seeds"] == 3 and mtl["param_count"] == 100 * w
    stl_a = 0.80 + 0.01 * np.array(SEEDS)
    assert stl["test"]["per_task"]["a"]["values"] == pytest.approx(stl_a)
    comp = c["comparisons"]["mtl"]
    assert comp["seeds"] == SEEDS
    assert comp["mean"]["mean_diff"] == pytest.approx(DIFF[w].mean())
    want = stats.paired_diff(stl_a + DIFF[w], stl_a)
    for t in TASKS:
      got = comp["per_task"][t]
      assert got["mean_diff"] == pytest.approx(DIFF[w].mean())
      assert got["p_value"] == pytest.approx(want["p_value"])
      assert (got["lo"], got["hi"]) == pytest.approx((want["lo"], want["hi"]))
    # Three equal p-values: Holm multiplies the smallest by 3, then max-steps.
    assert comp["per_task"]["a"]["p_holm"] == pytest.approx(
        min(1.0, 3 * want["p_value"]))
    assert comp["verdict"] == ("worse" if w == 4 else "better")
    # Per task the CI excludes 0, but Holm p = 3p > 0.05: not significant.
    assert comp["per_task"]["a"]["lo"] * comp["per_task"]["a"]["hi"] > 0
    assert comp["per_task"]["a"]["p_holm"] > 0.05
    assert comp["per_task"]["a"]["verdict"] == "no significant difference"
    assert comp["mean"]["wins"] == (0 if w == 4 else 3)
    stl_rows = stl_a[:, None] + 0.02 * np.arange(3)
    dp = [stats.relative_improvement(r + DIFF[w][i], r)
          for i, r in enumerate(stl_rows)]
    assert comp["delta_p"]["mean"] == pytest.approx(np.mean(dp))
    assert (comp["delta_p"]["mean"] > 0) == (w == 64)
  (sweep,) = summary["sweeps"]
  assert sweep["field"] == "model.width" and sweep["x"] == WIDTHS
  assert sweep["diffs"]["mtl"]["mean"] == pytest.approx(
      [DIFF[w].mean() for w in WIDTHS])


def test_lower_is_better_metric_flips_the_verdict(sweep_dir):
  summary = report.summarize(report.load_results([sweep_dir]), metric="loss")
  # loss = 1 − auc here: MTL's higher AUC at width 64 is a lower loss.
  comp = summary["conditions"][1]["comparisons"]["mtl"]
  assert comp["mean"]["mean_diff"] == pytest.approx(-DIFF[64].mean())
  assert comp["verdict"] == "better" and comp["delta_p"]["mean"] > 0
  # acc is null everywhere: every statistic is None, nothing raises.
  acc = report.summarize(report.load_results([sweep_dir]), metric="acc")
  assert acc["conditions"][0]["arms"]["mtl"]["test"]["mean"]["mean"] is None


def test_write_report_tables_and_pngs(sweep_dir, tmp_path):
  out = str(tmp_path / "out")
  summary = report.write_report(report.load_results([sweep_dir]), out,
                                title="Toy sweep")
  with open(os.path.join(out, "report.md")) as f:
    md = f.read()
  assert md.startswith("# Toy sweep")
  assert "| arm | seeds | params | lr | a | b | c | mean |" in md
  # MTL at width 64, task a: 0.80 + 0.03 s + 0.02 → 0.84 ± t(2)·0.02/√3.
  assert "| `mtl` | 3 | 6,400 | 0.001 | 0.840 ± 0.050 |" in md
  assert "per task: 0.01, 0.001, 0.001" in md
  assert "| **mean** | +0.030 ± 0.025 | [+0.005, +0.055] |" in md
  assert "Holm p" in md and "**better**" in md and "**worse**" in md
  with open(os.path.join(out, "report.json")) as f:
    assert json.load(f)["metric"] == "auc"
  # A line chart and a difference chart for the sweep, bars per condition.
  assert len(summary["plots"]) == 4
  assert any(p.endswith("_diff.png") for p in summary["plots"])
  for p in summary["plots"]:
    assert f"]({p})" in md
    with open(os.path.join(out, p), "rb") as f:
      data = f.read()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_baseline_and_duplicates(tmp_path):
  r = _results(4, condition={})
  r["runs"] = [x for x in r["runs"] if x["arm"] == "mtl"]
  r2 = json.loads(json.dumps(r))
  for x in r2["runs"]:
    x["arm"] = "mtl_negative"
  summary = report.summarize([r, r2])  # two results, one condition: pooled
  (c,) = summary["conditions"]
  assert c["comparisons"] == {} and any(
      "baseline arm 'stl' not present" in n for n in c["notes"])
  assert report.summarize([r, r2], baseline="mtl")["conditions"][0][
      "comparisons"]["mtl_negative"]["mean"]["mean_diff"] == 0.0
  with pytest.raises(ValueError, match="twice for one condition"):
    report.summarize([r, r])
  r2["runs"].append(r2["runs"][0])
  with pytest.raises(ValueError, match="this file"):
    report.summarize([r2])
  with pytest.raises(ValueError, match="metric"):
    report.summarize([r], metric="f1")


def test_sweep_axis():
  assert report.sweep_axis([{"w": 1}, {"w": 4}]) == ("w", [1.0, 4.0])
  assert report.sweep_axis([{"w": 1}]) is None
  assert report.sweep_axis([{"w": 1, "d": 2}, {"w": 4, "d": 3}]) is None
  assert report.sweep_axis([{"n": "x"}, {"n": "y"}]) is None
  # A per-task budget whose auxiliary entries move together.
  budgets = [{"b": [200, a, a, a]} for a in (200, 2000, 8000)]
  assert report.sweep_axis(budgets, ["p", "q", "r", "s"]) == (
      "b [q, r, s]", [200.0, 2000.0, 8000.0])
  assert report.sweep_axis([{"f": [0.5]}, {"f": [0.3]}]) == ("f", [0.5, 0.3])
  assert report.sweep_axis([{"b": [1, 2]}, {"b": [3, 5]}]) is None


def _stl_on_a_only(r):
  # config.stl_tasks=(0,): the STL arm's runs carry task "a" only.
  for run in r["runs"]:
    if run["arm"] == "stl":
      for split in ("val", "test"):
        a = run[split]["per_task"]["a"]
        run[split] = {"per_task": {"a": a}, "mean": dict(a)}
  return r


def test_stl_restricted_to_one_task_is_compared_on_that_task(tmp_path):
  summary = report.write_report([_stl_on_a_only(_results(4))],
                                str(tmp_path / "out"))
  (c,) = summary["conditions"]
  comp = c["comparisons"]["mtl"]
  assert comp["tasks"] == ["a"]
  # The mean is over "a" alone, where MTL − STL is DIFF by construction.
  assert comp["mean"]["mean_diff"] == pytest.approx(DIFF[4].mean())
  assert comp["per_task"]["a"]["mean_diff"] == pytest.approx(DIFF[4].mean())
  assert comp["per_task"]["b"]["n"] == 0
  assert c["arms"]["stl"]["lr"]["chosen"]["a"] == 1e-2
  md = open(tmp_path / "out" / "report.md").read()
  assert "**mean** (a)" in md and "nan" not in md
  # The MTL arm's own mean is over a, b, c; the shared mean is over "a".
  assert c["shared_tasks"] == ["a"]
  mtl = c["arms"]["mtl"]["test"]
  assert mtl["mean_shared"]["mean"] == pytest.approx(
      mtl["per_task"]["a"]["mean"])
  assert mtl["mean"]["mean"] > mtl["mean_shared"]["mean"]
  # A sweep of such conditions plots both arms' means over "a".
  sweep = report.summarize([_stl_on_a_only(_results(w)) for w in WIDTHS])
  (sw,) = sweep["sweeps"]
  assert sw["tasks"] == ["a"]
  for c, m in zip(sweep["conditions"], sw["arms"]["mtl"]["mean"]):
    assert m == pytest.approx(c["arms"]["mtl"]["test"]["per_task"]["a"]["mean"])


def test_a_rate_at_the_grid_edge_is_flagged():
  from mtljax.analysis.report_arms import lr_at_edge  # pylint: disable=g-import-not-at-top
  grid = [1e-3, 3e-3, 1e-2]
  assert lr_at_edge({"a": 3e-3, "b": 1e-3, "c": 1e-2}, grid) == {
      "b": "lowest", "c": "highest"}
  assert lr_at_edge({"a": 3e-3}, grid) == {}       # interior: no flag
  assert lr_at_edge({"a": 3e-3}, [3e-3]) == {}     # one point: untuned
