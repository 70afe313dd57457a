"""The report over mixed task types: each task in its own metric, and Δm.

A synthetic results.json with a binary task "a" (AUC), a 10-way multiclass
task "d" (accuracy) and a regression task "r" (R²); arms mtl, stl and a
partition arm "pair" ({a, d} and {r}); 3 seeds × 2 learning rates. Validation
makes lr=1e-2 the winner of every unit by its primary metric, while the other
metrics of the validation split point at lr=1e-3 (so a selection that did not
read each task's primary metric would show); test values at the losing rate
are absurd, so picking it shows too.
"""

import json
import os

import numpy as np
import pytest

from mtljax import cli
from mtljax.analysis import report
from mtljax.analysis import report_md
from mtljax.tasks import types as task_types

import test_report as binary_fixture

TASKS = [task_types.Binary("a"), task_types.Multiclass("d", num_classes=10),
         task_types.Regression("r")]
NAMES = [t.name for t in TASKS]
SEEDS = [0, 1, 2]
LRS = [1e-3, 1e-2]
GOOD_LR = 1e-2
S = np.asarray(SEEDS, dtype=np.float64)
# Test primary metric per seed (rows) and task (columns a, d, r).
STL = np.stack([0.80 + 0.01 * S, 0.60 + 0.02 * S, 0.40 + 0.03 * S], axis=1)
MTL = STL + np.stack([0.02 + 0.01 * S, -0.01 * (S + 1), 0.05 + 0 * S], axis=1)
PAIR = np.stack([MTL[:, 0] - 0.01, MTL[:, 1] - 0.01, STL[:, 2]], axis=1)
TEST = {"mtl": MTL, "stl": STL, "pair": PAIR}
GROUPS = {"mtl": [NAMES], "stl": [[t] for t in NAMES],
          "pair": [["a", "d"], ["r"]]}
MODES = {"mtl": "mtl", "stl": "stl", "pair": "partition"}


def _task_metrics(t, v, other):
  """All of task t's own metrics, from its primary value v.

  `other` is the value the secondary metrics are built from: at validation it
  ranks the rates the other way round from the primary metric.
  """
  if t.type == "binary":
    return {"auc": v, "ap": other - 0.1, "acc": other - 0.05, "loss": 1 - v}
  if t.type == "multiclass":
    return {"acc": v, "top5": other + 0.2, "macro_f1": other - 0.1,
            "loss": 2 - v}
  return {"r2": v, "mse": 1 - v, "mae": 0.5 * (1 - v)}


def _split(values, others=None):
  others = values if others is None else others
  per_task = {t.name: _task_metrics(t, float(v), float(o))
              for t, v, o in zip(TASKS, values, others)}
  mean = {}
  for k in dict.fromkeys(k for d in per_task.values() for k in d):
    mean[k] = float(np.mean([d[k] for d in per_task.values() if k in d]))
  mean["primary"] = float(np.mean(values))
  return {"per_task": per_task, "mean": mean}


def _runs(arms=("mtl", "stl", "pair")):
  runs = []
  for arm in arms:
    for lr in LRS:
      for s in SEEDS:
        good = lr == GOOD_LR
        # Primary: 0.8 at the good rate, 0.5 at the other; the secondary
        # metrics the other way round.
        val = [0.8 + 0.01 * s if good else 0.5] * 3
        other = [0.5 if good else 0.9] * 3
        test = TEST[arm][s] if good else np.full(3, 0.1)
        runs.append({"arm": arm, "mode": MODES[arm], "seed": s,
                     "learning_rate": lr, "width": 8, "param_count": 100,
                     "groups": GROUPS[arm], "best_step": [10] * 3,
                     "nonfinite_skipped": [0] * 3, "warnings": [],
                     "val": _split(val, other), "test": _split(test)})
  return runs


def _results(selection_metric="primary", arms=("mtl", "stl", "pair")):
  return {"schema_version": 1, "experiment": "mixed", "condition": {},
          "dataset": {"name": "toy_mixed", "task_names": NAMES,
                      "tasks": [t.to_json() for t in TASKS]},
          "selection_metric": selection_metric, "config": {}, "env": {},
          "runs": _runs(arms)}


def _write(path, obj):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "results.json"), "w") as f:
    json.dump(obj, f)
  return str(path)


def _delta_m(a, b):
  """Δm per seed by hand: (100/T) Σ_t (M_a − M_b) / M_b (primaries: +1)."""
  return 100.0 * np.mean((a - b) / b, axis=1)


@pytest.fixture(name="mixed")
def fixture_mixed(tmp_path):
  return report.load_results([_write(tmp_path / "wd", _results())])


def test_each_task_in_its_primary_metric(mixed):
  summary = report.summarize(mixed)
  json.dumps(summary, allow_nan=False)
  assert summary["metric"] == "primary" and summary["higher_is_better"]
  (c,) = summary["conditions"]
  assert c["task_types"] == {"a": "binary", "d": "multiclass",
                             "r": "regression"}
  assert c["task_metrics"] == {"a": "auc", "d": "acc", "r": "r2"}
  assert c["skipped_tasks"] == {}
  for arm, want in TEST.items():
    d = c["arms"][arm]
    # Selection by "primary" picks the rate the primaries favour.
    assert set(d["lr"]["chosen"].values()) == {GOOD_LR}, arm
    for j, t in enumerate(NAMES):
      assert d["test"]["per_task"][t]["values"] == pytest.approx(want[:, j])
    assert d["test"]["mean"]["values"] == pytest.approx(want.mean(axis=1))
  comp = c["comparisons"]["mtl"]
  assert comp["per_task"]["d"]["mean_diff"] == pytest.approx(-0.02)
  assert comp["per_task"]["r"]["mean_diff"] == pytest.approx(0.05)
  assert comp["per_task"]["r"]["verdict"] == "better"
  assert comp["per_task"]["d"]["verdict"] == "no significant difference"


def test_report_md_names_each_tasks_metric(mixed, tmp_path):
  out = str(tmp_path / "out")
  summary = report.write_report(mixed, out, title="Mixed")
  md = open(os.path.join(out, "report.md")).read()
  assert "each task's primary metric (AUC for binary, accuracy for " \
         "multiclass, R² for regression tasks" in md
  assert "| arm | seeds | params | lr | a (AUC) | d (accuracy) | r (R²) " \
         "| mean |" in md
  # MTL, task a: 0.82, 0.84, 0.86 → 0.840 ± t(2)·0.02/√3 = 0.050.
  assert "| `mtl` | 3 | 100 | 0.01 | 0.840 ± 0.050 | 0.600 ± 0.025 | " \
         "0.480 ± 0.075 |" in md
  assert "| task | metric | Δ | 95% CI | p | Holm p | W/L | verdict |" in md
  assert "| a | AUC |" in md and "| d | accuracy |" in md
  assert "| r | R² | +0.050 ± 0.000 |" in md
  assert "validation primary metric of each task averaged" in md
  assert "nan" not in md.lower() and "None" not in md
  with open(os.path.join(out, "report.json")) as f:
    saved = json.load(f)
  assert saved["conditions"][0]["task_metrics"] == {"a": "auc", "d": "acc",
                                                    "r": "r2"}
  assert saved["conditions"][0]["delta_m"] == summary["conditions"][0][
      "delta_m"]
  assert any(p.endswith("per_task.png") for p in summary["plots"])


def test_delta_m_against_the_stl_run_of_the_same_seed(mixed, tmp_path):
  summary = report.write_report(mixed, str(tmp_path / "out"))
  (c,) = summary["conditions"]
  dm = c["delta_m"]
  assert dm["reference"] == "stl"
  assert dm["metrics"] == {"a": "auc", "d": "acc", "r": "r2"}
  assert set(dm["arms"]) == {"mtl", "pair"}  # every non-STL arm
  for arm in ("mtl", "pair"):
    want = _delta_m(TEST[arm], STL)
    got = dm["arms"][arm]
    assert got["values"] == pytest.approx(want)
    assert got["mean"] == pytest.approx(want.mean())
    half = 4.302652729911275 * want.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert (got["lo"], got["hi"]) == pytest.approx(
        (want.mean() - half, want.mean() + half))
    assert got["n"] == 3 and got["seeds"] == SEEDS
    assert got["tasks"] == NAMES and got["skipped"] == {}
  md = open(tmp_path / "out" / "report.md").read()
  want = _delta_m(MTL, STL)
  half = 4.302652729911275 * want.std(ddof=1) / np.sqrt(3)
  assert f"| `mtl` | {want.mean():+.2f} ± {half:.2f} |" in md
  assert "against the real STL run of the same seed" in md
  assert "Δm vs `stl` (%, primary metrics: a AUC, d accuracy, r R²" in md
  # Δm is against the STL arm even when the comparisons' baseline is MTL.
  by_mtl = report.summarize(mixed, baseline="mtl")["conditions"][0]
  assert by_mtl["delta_m"]["reference"] == "stl"
  assert by_mtl["delta_m"]["arms"]["mtl"]["mean"] == pytest.approx(
      want.mean())
  # ... and on the primary metrics whatever metric is reported.
  by_mse = report.summarize(mixed, metric="mse")["conditions"][0]
  assert by_mse["delta_m"]["arms"]["mtl"]["values"] == pytest.approx(want)


def test_delta_m_skips_a_task_whose_stl_value_is_zero_or_nan(tmp_path):
  r = _results()
  for run in r["runs"]:
    if run["arm"] == "stl" and run["learning_rate"] == GOOD_LR:
      if run["seed"] == 1:
        run["test"]["per_task"]["r"]["r2"] = -0.25  # worse than the mean's
      if run["seed"] == 2:
        run["test"]["per_task"]["d"]["acc"] = None
  summary = report.write_report([r], str(tmp_path / "out"))
  got = summary["conditions"][0]["delta_m"]["arms"]["mtl"]
  assert got["tasks"] == ["a"]
  assert "-0.25 at seed 1, not > 0" in got["skipped"]["r"]
  assert "NaN at seed 2" in got["skipped"]["d"]
  want = 100.0 * (MTL[:, 0] - STL[:, 0]) / STL[:, 0]
  assert got["values"] == pytest.approx(want)
  md = open(tmp_path / "out" / "report.md").read()
  assert "Δm of `mtl` skips task `r`: its STL r2 is -0.25 at seed 1" in md
  # Every task's STL value is 0: no task is left, Δm is NaN (None).
  for run in r["runs"]:
    if run["arm"] == "stl":
      for t, m in (("a", "auc"), ("d", "acc"), ("r", "r2")):
        run["test"]["per_task"][t][m] = 0.0
  got = report.summarize([r])["conditions"][0]["delta_m"]["arms"]["mtl"]
  assert got["tasks"] == [] and got["mean"] is None and got["n"] == 0
  assert set(got["skipped"]) == set(NAMES)


def test_no_stl_arm_no_delta_m(tmp_path):
  summary = report.summarize([_results(arms=("mtl", "pair"))],
                             baseline="mtl")
  (c,) = summary["conditions"]
  assert c["delta_m"] == {"reference": None, "arms": {},
                          "metrics": {"a": "auc", "d": "acc", "r": "r2"}}
  assert "Δm" not in report_md.markdown(summary, "t")


def test_a_metric_some_tasks_lack_skips_them(mixed, tmp_path):
  summary = report.write_report(mixed, str(tmp_path / "out"), metric="mse")
  assert summary["metric"] == "mse" and not summary["higher_is_better"]
  (c,) = summary["conditions"]
  assert c["task_metrics"] == {"r": "mse"}
  assert set(c["skipped_tasks"]) == {"a", "d"}
  assert any("'a' is skipped" in n and "binary" in n for n in c["notes"])
  assert set(c["arms"]["mtl"]["test"]["per_task"]) == {"r"}
  comp = c["comparisons"]["mtl"]
  # MSE = 1 − R²: MTL's R² is 0.05 higher, its MSE 0.05 lower: better.
  assert comp["mean"]["mean_diff"] == pytest.approx(-0.05)
  assert comp["verdict"] == "better" and comp["delta_p"]["mean"] > 0
  assert comp["per_task"]["r"]["verdict"] == "better"
  md = open(tmp_path / "out" / "report.md").read()
  assert md.count("Test MSE (lower is better).") == 1
  assert "| arm | seeds | params | lr | r | mean |" in md
  assert "> note: task 'a' is skipped: a binary task has no mse" in md
  # The rate column still lists every task's rate (selection is by primary).
  assert "| `stl` | 3 | 100 | 0.01 | 0.570 ± 0.075 |" in md
  # A metric of two of the three types.
  acc = report.summarize(mixed, metric="acc")["conditions"][0]
  assert acc["task_metrics"] == {"a": "acc", "d": "acc"}
  assert list(acc["skipped_tasks"]) == ["r"]
  assert acc["arms"]["mtl"]["test"]["per_task"]["a"]["values"] == \
      pytest.approx(MTL[:, 0] - 0.05)
  top5 = report.summarize(mixed, metric="top5")["conditions"][0]
  assert top5["task_metrics"] == {"d": "top5"}


def test_an_unknown_metric_is_one_report_error(mixed):
  with pytest.raises(report.ReportError, match="'f1' is no task's metric"):
    report.summarize(mixed, metric="f1")
  # A metric of a registered type that no task here has.
  regression_only = json.loads(json.dumps(_results()))
  regression_only["dataset"]["tasks"] = [
      task_types.Regression(n).to_json() for n in NAMES]
  with pytest.raises(report.ReportError, match="'auc' is no task's metric"):
    report.summarize([regression_only], metric="auc")


def test_primary_selection_and_lower_is_better_selection():
  # By primary: every unit picks 1e-2 (tested above). By acc: a's validation
  # acc favours 1e-3, d's (its primary) 1e-2; the MTL mean over both, 1e-3;
  # r, which has no acc, does not count (a note): its STL network keeps the
  # smaller rate.
  c = report.summarize([_results("acc")])["conditions"][0]
  assert c["task_metrics"] == {"a": "auc", "d": "acc", "r": "r2"}
  assert c["arms"]["mtl"]["lr"]["chosen"] == {t: 1e-3 for t in NAMES}
  assert c["arms"]["stl"]["lr"]["chosen"] == {"a": 1e-3, "d": GOOD_LR,
                                              "r": 1e-3}
  assert any("'r' (regression) has no selection metric 'acc'" in n
             for n in c["notes"])
  # By mse (lower is better): r's network picks the rate of the lower MSE.
  c = report.summarize([_results("mse")])["conditions"][0]
  assert c["arms"]["stl"]["lr"]["chosen"]["r"] == GOOD_LR
  assert c["arms"]["stl"]["lr"]["val_score"]["r"] == pytest.approx(
      {"0.001": 0.5, "0.01": 1 - 0.81})
  assert c["arms"]["pair"]["lr"]["chosen"]["r"] == GOOD_LR


def test_selection_metric_primary_is_accepted_on_load(tmp_path):
  (r,) = report.load_results([_write(tmp_path / "wd", _results())])
  assert r["selection_metric"] == "primary"
  bad = _results()
  bad["selection_metric"] = "f1"
  with pytest.raises(report.ReportError, match="selection_metric 'f1'"):
    report.load_results([_write(tmp_path / "bad", bad)])


def test_cli_reports_mixed_types(tmp_path, capsys):
  wd = _write(tmp_path / "wd", _results())
  assert cli.main(["report", wd]) == 0
  md = open(os.path.join(wd, "report.md")).read()
  assert "a (AUC)" in md and "Δm vs `stl`" in md
  assert "Traceback" not in capsys.readouterr().err


# ------------------------------------------- all-binary results, unchanged.
# report.md of test_report's width-4 results with STL restricted to task "a",
# as the report wrote it before task types and Δm (byte for byte).
BEFORE = """\
# mtljax report: e2_width_sweep

Test AUC (higher is better). Each arm's learning rate is chosen from its grid \
by the validation auc averaged over seeds (over tasks for one MTL model; per \
task for STL arms, whose tasks are separate networks). Cells: mean ± \
half-width of the 95% t-interval over seeds. Differences are paired by seed \
against `stl`; Holm p adjusts the per-task p-values (paired t-test) within a \
condition; Δp is the mean relative change in % (positive: better); W/L counts \
seeds won and lost. A task's verdict needs Holm p < 0.05; the mean's verdict \
needs its CI to exclude 0.

## Overview

| experiment | condition | comparison | Δ mean AUC | p | Δp % | W/L | verdict |
| --- | --- | --- | --- | --- | --- | --- | --- |
| e2_width_sweep | width=4 | mtl − stl | -0.040 ± 0.025 | 0.020 | -4.93 ± 2.92 \
| 0/3 | **worse** |

## e2_width_sweep — width=4

dataset `toy` · condition `{"model.width": 4}` · seeds: 3 · sources: \
`<in memory>`

> note: arm mtl: the chosen learning rate is the lowest of its grid for a, b, \
c: the grid may not bracket the optimum
> note: arm stl: the chosen learning rate is the lowest of its grid for b, c: \
the grid may not bracket the optimum
> note: arm stl: the chosen learning rate is the highest of its grid for a: \
the grid may not bracket the optimum

Test AUC:

| arm | seeds | params | lr | a | b | c | mean |
| --- | --- | --- | --- | --- | --- | --- | --- |
| `mtl` | 3 | 400 | 0.001 | 0.770 ± 0.000 | 0.790 ± 0.000 | 0.810 ± 0.000 \
| **0.790 ± 0.000** |
| `stl` | 3 | 400 | per task: 0.01, 0.001, 0.001 | 0.810 ± 0.025 | — | — \
| **0.810 ± 0.025** |

**`mtl` − `stl`** (paired by seed, n=3): Δp = -4.93 ± 2.92 %, verdict: \
**worse**

| task | Δ AUC | 95% CI | p | Holm p | W/L | verdict |
| --- | --- | --- | --- | --- | --- | --- |
| a | -0.040 ± 0.025 | [-0.065, -0.015] | 0.020 | 0.020 | 0/3 | worse |
| **mean** (a) | -0.040 ± 0.025 | [-0.065, -0.015] | 0.020 | — | 0/3 | worse |

Learning-rate selection (validation auc, mean over seeds; chosen in bold):

| arm | task | lr 0.001 | lr 0.01 |
| --- | --- | --- | --- |
| `mtl` | all (mean) | **0.8100** | 0.7000 |
| `stl` | a | 0.7000 | **0.8100** |

## Plots

![e2_width_sweep_width=4_auc_per_task.png](plots/\
e2_width_sweep_width=4_auc_per_task.png)
"""


def _without_delta_m(md: str) -> str:
  """report.md less its Δm sentence, tables and skip lines."""
  lines, out, i = md.split("\n"), [], 0
  while i < len(lines):
    if lines[i].startswith("Δm"):
      table = lines[i].endswith(":")
      i += 2  # the paragraph and the blank line after it
      if table:
        while lines[i].startswith("|"):
          i += 1
        i += 1
      continue
    out.append(lines[i])
    i += 1
  return "\n".join(out)


def _old_binary():
  return binary_fixture._stl_on_a_only(binary_fixture._results(4))  # pylint: disable=protected-access


def test_old_all_binary_results_report_as_before(tmp_path):
  old = _old_binary()
  assert "tasks" not in old["dataset"]
  summary = report.write_report([old], str(tmp_path / "old"))
  md = open(tmp_path / "old" / "report.md").read()
  assert _without_delta_m(md) == BEFORE
  assert "Δm vs `stl` (%, primary metrics: a AUC, b AUC, c AUC" in md
  (c,) = summary["conditions"]
  assert c["task_types"] == {"a": "binary", "b": "binary", "c": "binary"}
  assert c["task_metrics"] == {"a": "auc", "b": "auc", "c": "auc"}
  assert summary["metric"] == "auc"
  # Δm (on AUC, the primary) is Δp here: both are over task "a" alone.
  dm = c["delta_m"]["arms"]["mtl"]
  assert dm["tasks"] == ["a"] and set(dm["skipped"]) == {"b", "c"}
  assert dm["values"] == pytest.approx(
      c["comparisons"]["mtl"]["delta_p"]["values"])
  # The same results with dataset.tasks (all binary) report identically.
  new = _old_binary()
  new["dataset"]["tasks"] = [task_types.Binary(n).to_json()
                             for n in new["dataset"]["task_names"]]
  again = report.write_report([new], str(tmp_path / "new"))
  assert open(tmp_path / "new" / "report.md").read() == md
  assert again == summary


def test_old_binary_selection_metric_is_still_the_default_metric():
  old = _old_binary()
  old["selection_metric"] = "loss"
  summary = report.summarize([old])
  assert summary["metric"] == "loss" and not summary["higher_is_better"]
