"""One arm of a report condition: its networks, rate selection and test table.

Split from report.py, which builds each condition's arms with `_arm` and
compares them (report.py) and computes Δm (delta_m.py) from the tables here.
An arm's networks (`_units`: one for MTL, one per task for STL, one per group
for a partition) each pick their learning rate from the arm's grid by the
mean over seeds of the validation selection metric (`_select`); the arm's
test metrics are then read at the chosen rates (`_test_table`), with
t-intervals over seeds (`_ci`). `_paired_rows` pairs two arms' tables by seed.
"""

from __future__ import annotations

import math

import numpy as np

from mtljax.analysis import stats
from mtljax.tasks import types as task_types

PRIMARY = task_types.PRIMARY

CONFIDENCE = 0.95  # re-exported: report.CONFIDENCE


def _num(v) -> float:
  return float("nan") if v is None else float(v)


def _value(run: dict, split: str, task: str, metric: str) -> float:
  return _num(run[split]["per_task"].get(task, {}).get(metric))


def _nanmean(x) -> float:
  x = np.asarray(x, dtype=np.float64)
  return float(np.nanmean(x)) if np.any(~np.isnan(x)) else float("nan")


def _units(runs: list[dict], tasks: list[str]) -> list[list[str]]:
  """The networks of an arm, as task lists: each picks its own rate.

  MTL is one unit of every task, STL one per task, a partition one per
  group (results.json's `groups`; older results only have `mode`). Tasks the
  arm does not learn are units of their own, with no scores.
  """
  groups = runs[0].get("groups")
  if groups is None:
    return [[t] for t in tasks] if runs[0]["mode"] == "stl" else [tasks]
  units = [[t for t in g if t in tasks] for g in groups]
  units = [u for u in units if u]
  learned = {t for u in units for t in u}
  return units + [[t] for t in tasks if t not in learned]


def _per_task_metric(tasks: list, metric: str) -> dict:
  """{task name: the metric it is read in, or None if it has none}.

  `PRIMARY` is each task's own primary metric.
  """
  return {t.name: (t.primary_metric if metric == PRIMARY else
                   metric if metric in t.metrics else None) for t in tasks}


def _select(runs: list[dict], tasks: list[str], sel_of: dict, sign: float,
            selection=()) -> tuple[dict, dict]:
  """Chosen lr per task and the validation score of every (unit, lr).

  sel_of[t] is the validation metric task t is selected by (None: t does not
  count); sign is +1 for higher-is-better selection, else -1.
  A rate with more NaN seeds (e.g. diverged) ranks below any with fewer, so a
  rate is not rewarded for the seeds it survived; ties go to the smaller rate.
  `selection` (task names, config.train.selection_tasks) restricts a unit's
  score to those of its tasks, when it has any, as training selected its
  checkpoints.
  """
  lrs = sorted({r["learning_rate"] for r in runs})
  units = _units(runs, tasks)
  chosen, scores = {}, {}
  for unit in units:
    rank, table = [], {}
    by = [t for t in unit if t in selection] or unit
    for lr in lrs:
      seeds = [_nanmean([_value(r, "val", t, sel_of[t]) for t in by])
               for r in runs if r["learning_rate"] == lr]
      n_nan = int(np.isnan(seeds).sum())
      mean = _nanmean(seeds)
      table[f"{lr:g}"] = mean
      rank.append((n_nan, -sign * mean if not math.isnan(mean) else math.inf,
                   lr))
    best = min(rank)[2]
    key = ("mean" if len(unit) == len(tasks) and len(units) == 1
           else "+".join(unit))
    scores[key] = table
    chosen.update({t: best for t in unit})
  return chosen, scores


def _ci(values) -> dict:
  mean, lo, hi, n = stats.mean_ci(values, CONFIDENCE)
  return {"mean": mean, "lo": lo, "hi": hi, "n": n,
          "values": [float(v) for v in values]}


def _test_table(runs: list[dict], seeds: list, tasks: list[str],
                chosen: dict, metric_of: dict) -> np.ndarray:
  """[S, T]: test metric_of[t] of seed s, task t at task t's chosen rate."""
  by_key = {(r["seed"], r["learning_rate"]): r for r in runs}
  table = np.full((len(seeds), len(tasks)), np.nan)
  for i, s in enumerate(seeds):
    for j, t in enumerate(tasks):
      run = by_key.get((s, chosen[t]))
      if run is not None:
        table[i, j] = _value(run, "test", t, metric_of[t])
  return table


def _arm(runs: list[dict], g: dict, metric_of: dict, sel_of: dict,
         sign: float) -> dict:
  """One arm: chosen rates, test CIs of the reported tasks (metric_of)."""
  mode, tasks = runs[0]["mode"], g["task_names"]
  picked = ((g.get("config") or {}).get("train") or {}).get(
      "selection_tasks") or ()
  chosen, scores = _select(runs, tasks, sel_of, sign,
                           [tasks[k] for k in picked if k < len(tasks)])
  seeds = sorted({r["seed"] for r in runs})
  reported = list(metric_of)
  table = _test_table(runs, seeds, reported, chosen, metric_of)
  counts = [r.get("param_count") for r in runs if r.get("param_count")]
  grid = sorted({r["learning_rate"] for r in runs})
  return {
      "mode": mode, "seeds": seeds, "n_seeds": len(seeds),
      "param_count": int(counts[0]) if counts else None,
      "lr": {"grid": grid,
             "per_task_selection": mode != "mtl", "chosen": chosen,
             "val_score": scores, "at_edge": lr_at_edge(chosen, grid)},
      "test": {"per_task": {t: _ci(table[:, j])
                            for j, t in enumerate(reported)},
               "mean": _ci([_nanmean(row) for row in table])},
      "_table": table,
      # Each task's primary test metric, for Δm.
      "_primary": _test_table(runs, seeds, tasks, chosen,
                              _per_task_metric(g["tasks"], PRIMARY)),
  }


def lr_at_edge(chosen: dict, grid: list) -> dict:
  """{task: "lowest" | "highest"} where the chosen rate is at the grid's edge.

  A rate chosen at an edge of a grid of 2+ points may not be the optimum:
  the grid does not bracket it (a one-point grid is flagged by the report
  as untuned instead).
  """
  if len(grid) < 2:
    return {}
  return {t: ("lowest" if lr == grid[0] else "highest")
          for t, lr in chosen.items() if lr in (grid[0], grid[-1])}


def _paired_rows(a: dict, b: dict, key: str
                 ) -> tuple[list, np.ndarray, np.ndarray]:
  """The seeds both arms ran, and their a[key], b[key] rows for them."""
  seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
  return (seeds, a[key][[a["seeds"].index(s) for s in seeds]],
          b[key][[b["seeds"].index(s) for s in seeds]])
