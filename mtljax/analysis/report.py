"""Aggregates results.json files into CI tables, paired tests and plots.

    results = report.load_results(["/tmp/e2"])    # workdirs or sweep trees
    summary = report.summarize(results, metric="auc", baseline="stl")
    report.write_report(results, "/tmp/e2")       # report.md, .json, PNGs

Equal tuning budget: every arm picks its learning rate from its own grid by
the mean over seeds of the validation selection metric (results.json's
`selection_metric`), and only then are test metrics read. Each network of an
arm picks its rate by the mean over its own tasks: an "mtl" arm is one model
(one rate), an "stl" arm is T networks (a rate per task), and a partition arm
one rate per group (results.json's `groups`). Arms are compared with the
baseline paired by seed (runs with one seed share data order and label masks),
with Holm's correction across the tasks of a condition.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile

import numpy as np

from mtljax.tasks import metrics as metrics_lib
from mtljax.analysis import report_sweeps
from mtljax.analysis import stats
# Re-exported: report.load_results, report.ReportError, report.SCHEMA_VERSION.
from mtljax.analysis.report_load import load_results  # noqa: F401 (re-exported)
from mtljax.analysis.report_load import ReportError
from mtljax.analysis.report_load import SCHEMA_VERSION  # noqa: F401 (re-exported)
from mtljax.analysis.report_md import markdown
from mtljax.analysis.report_sweeps import sweep_axis  # re-exported: report.sweep_axis

CONFIDENCE = 0.95
MAX_BAR_CHARTS_PER_EXPERIMENT = 6  # beyond this: first and last condition only
MAX_PNGS = 40


# --------------------------------------------------------------- summarizing.
def _num(v) -> float:
  return float("nan") if v is None else float(v)


def _value(run: dict, split: str, task: str, metric: str) -> float:
  return _num(run[split]["per_task"].get(task, {}).get(metric))


def _nanmean(x) -> float:
  x = np.asarray(x, dtype=np.float64)
  return float(np.nanmean(x)) if np.any(~np.isnan(x)) else float("nan")


def _group(results: list[dict]) -> list[dict]:
  """Merges results by (experiment, dataset, condition); runs are pooled."""
  groups: dict[tuple, dict] = {}
  origin: dict[tuple, dict] = {}  # group key -> {(arm, seed, lr): (i, source)}
  for i, r in enumerate(results):
    cond = r.get("condition") or {}
    ds = r.get("dataset") or {}
    tasks = list(ds.get("task_names") or r["runs"][0]["test"]["per_task"])
    key = (r["experiment"], ds.get("name"), json.dumps(cond, sort_keys=True))
    g = groups.setdefault(key, {
        "experiment": r["experiment"], "dataset": ds.get("name"),
        "condition": cond, "task_names": tasks,
        "selection_metric": r.get("selection_metric") or "auc",
        "sources": [], "runs": []})
    src = r.get("source", "<in memory>")
    if tasks != g["task_names"]:
      raise ReportError(f"{src}: task names {tasks} differ from "
                        f"{g['task_names']} of {g['sources']} (same condition)")
    # Where each (arm, seed, lr) of the group came from: a workdir given
    # twice under two names (e.g. a copy) is refused naming both.
    have = origin.setdefault(key, {})
    for run in r["runs"]:
      k = (run["arm"], run["seed"], run["learning_rate"])
      if k in have:
        n, first = have[k]
        where = (f"both in this file ({_where(src)})" if n == i else
                 f"in {_where(first)} and in {_where(src)}")
        raise ReportError(
            "run (experiment, condition, arm, seed, learning rate) = "
            f"({key[0]!r}, {key[2]}, {k[0]!r}, {k[1]}, {k[2]:g}) twice for "
            f"one condition: {where}")
      have[k] = (i, src)
      g["runs"].append(run)
    g["sources"].append(src)
  return list(groups.values())


def _where(source: str) -> str:
  """A results.json's directory (the workdir or sweep point) for messages."""
  if os.path.basename(source) == "results.json":
    return os.path.dirname(source) or "."
  return source


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


def _select(runs: list[dict], tasks: list[str], sel: str
            ) -> tuple[dict, dict]:
  """Chosen lr per task and the validation score of every (unit, lr).

  A rate with more NaN seeds (e.g. diverged) ranks below any with fewer, so a
  rate is not rewarded for the seeds it survived; ties go to the smaller rate.
  """
  sign = 1.0 if metrics_lib.HIGHER_IS_BETTER.get(sel, True) else -1.0
  lrs = sorted({r["learning_rate"] for r in runs})
  units = _units(runs, tasks)
  chosen, scores = {}, {}
  for unit in units:
    rank, table = [], {}
    for lr in lrs:
      seeds = [_nanmean([_value(r, "val", t, sel) for t in unit])
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


def _arm(runs: list[dict], tasks: list[str], sel: str, metric: str) -> dict:
  mode = runs[0]["mode"]
  chosen, scores = _select(runs, tasks, sel)
  seeds = sorted({r["seed"] for r in runs})
  by_key = {(r["seed"], r["learning_rate"]): r for r in runs}
  # table[s, t]: test metric of seed s, task t at task t's chosen rate.
  table = np.full((len(seeds), len(tasks)), np.nan)
  for i, s in enumerate(seeds):
    for j, t in enumerate(tasks):
      run = by_key.get((s, chosen[t]))
      if run is not None:
        table[i, j] = _value(run, "test", t, metric)
  counts = [r.get("param_count") for r in runs if r.get("param_count")]
  return {
      "mode": mode, "seeds": seeds, "n_seeds": len(seeds),
      "param_count": int(counts[0]) if counts else None,
      "lr": {"grid": sorted({r["learning_rate"] for r in runs}),
             "per_task_selection": mode != "mtl", "chosen": chosen,
             "val_score": scores},
      "test": {"per_task": {t: _ci(table[:, j]) for j, t in enumerate(tasks)},
               "mean": _ci([_nanmean(row) for row in table])},
      "_table": table,
  }


def _verdict(d: dict, higher_is_better: bool) -> str:
  lo, hi = d["lo"], d["hi"]
  if math.isnan(lo) or math.isnan(hi) or lo <= 0 <= hi:
    return "no significant difference"
  # "better" in the metric's own direction: a lower loss is better.
  return "better" if (lo > 0) == higher_is_better else "worse"


def _compare(a: dict, b: dict, tasks: list[str], hib: bool) -> dict:
  seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
  ta = a["_table"][[a["seeds"].index(s) for s in seeds]]
  tb = b["_table"][[b["seeds"].index(s) for s in seeds]]
  per_task = {t: stats.paired_diff(ta[:, j], tb[:, j], CONFIDENCE)
              for j, t in enumerate(tasks)}
  adj = stats.holm([per_task[t]["p_value"] for t in tasks])
  for t, p in zip(tasks, adj):
    d = per_task[t]
    d["p_holm"] = float(p)
    # Per task, a verdict must survive the multiple-testing correction: with
    # T tasks, one unadjusted CI in T excludes 0 by chance far more than 5%.
    sig = p < 1 - CONFIDENCE
    d["verdict"] = (_verdict(d, hib) if sig else "no significant difference")
  # The mean is over the tasks both arms learn: an STL arm restricted to
  # some tasks (config.stl_tasks) is compared with MTL on those tasks only.
  both = [j for j in range(len(tasks))
          if np.any(~np.isnan(ta[:, j])) and np.any(~np.isnan(tb[:, j]))]
  ta, tb = ta[:, both], tb[:, both]
  mean = stats.paired_diff([_nanmean(r) for r in ta],
                           [_nanmean(r) for r in tb], CONFIDENCE)
  dp = _ci([stats.relative_improvement(ta[i], tb[i], hib)
            for i in range(len(seeds))])
  return {"seeds": seeds, "per_task": per_task, "mean": mean, "delta_p": dp,
          "tasks": [tasks[j] for j in both], "verdict": _verdict(mean, hib)}


def summarize(results: list[dict], metric: str | None = None,
              baseline: str = "stl") -> dict:
  """Per-condition test metrics with CIs and paired comparisons (JSON-safe).

  Args:
    results: dicts from `load_results` (or `train_and_evaluate`).
    metric: the reported test metric, one of metrics.METRICS; None: the
      runs' selection metric (the task type's primary metric by default).
    baseline: the arm every other arm is compared with, paired by seed.

  Returns:
    {"metric", "higher_is_better", "baseline", "confidence", "conditions":
    [{"experiment", "dataset", "condition", "label", "task_names",
    "selection_metric", "sources", "notes", "shared_tasks", "arms": {arm:
    {"mode", "seeds", "n_seeds", "param_count", "lr": {"grid",
    "per_task_selection", "chosen": {task: lr}, "val_score"}, "test":
    {"per_task": {task: CI}, "mean": CI, "mean_shared": CI (only when some
    arm learns fewer tasks)}}}, "comparisons": {arm: {"seeds", "tasks",
    "per_task": {task: paired_diff + p_holm + verdict}, "mean": paired_diff
    (over "tasks", those both arms learn), "delta_p": CI, "verdict"}}}],
    "sweeps": [{"experiment", "field", "x", "tasks" (None: all; else the
    tasks the arms' means are over), "conditions": indices, "arms": {arm:
    {"mean", "lo", "hi"}}, "diffs": {arm: {"mean", "lo", "hi"}}}]}, where CI
    = {"mean", "lo", "hi", "n", "values"} and NaN is None. Conditions of a
    sweep are ordered along its field.

  Raises:
    ReportError: on a bad metric, no results, task names that differ within
      a condition, or one (arm, seed, lr) run twice in a condition (e.g. a
      workdir and its copy), naming both places.
  """
  if not results:
    raise ReportError("no results to summarize")
  if metric is None:
    metric = results[0].get("selection_metric") or "auc"
  if metric not in metrics_lib.METRICS:
    raise ReportError(f"metric {metric!r} is not one of {metrics_lib.METRICS}")
  by_exp: dict[str, list] = {}
  for g in _group(results):
    by_exp.setdefault(g["experiment"], []).append(g)
  conditions, sweeps = [], []
  for exp, groups in by_exp.items():
    conds = [g["condition"] for g in groups]
    axis = sweep_axis(conds, groups[0]["task_names"])
    labels = report_sweeps.labels(conds)
    order = np.argsort(axis[1], kind="stable") if axis else range(len(groups))
    block = [_condition(groups[i], labels[i], metric, baseline)
             for i in order]
    if axis:
      sweeps.append(report_sweeps.sweep(exp, axis[0], sorted(axis[1]), block,
                           len(conditions)))
    conditions += block
  return _clean({"metric": metric,
                 "higher_is_better": metrics_lib.HIGHER_IS_BETTER[metric],
                 "baseline": baseline, "confidence": CONFIDENCE,
                 "conditions": conditions, "sweeps": sweeps})


def _condition(g: dict, label: str, metric: str, baseline: str) -> dict:
  tasks, notes = g["task_names"], []
  hib = metrics_lib.HIGHER_IS_BETTER[metric]
  by_arm: dict[str, list] = {}
  for run in g["runs"]:
    by_arm.setdefault(run["arm"], []).append(run)
  arms = {a: _arm(rs, tasks, g["selection_metric"], metric)
          for a, rs in by_arm.items()}
  if len({tuple(a["lr"]["grid"]) for a in arms.values()}) > 1:
    notes.append("arms were tuned on different learning-rate grids: the "
                 "tuning budget is not equal")
  # Tasks every arm learns. When an arm learns fewer (config.stl_tasks), the
  # arms' means over their own tasks are not comparable: sweeps plot the mean
  # over the shared tasks instead.
  shared = [j for j in range(len(tasks))
            if all(np.any(~np.isnan(a["_table"][:, j])) for a in arms.values())]
  if len(shared) < len(tasks):
    for a in arms.values():
      a["test"]["mean_shared"] = _ci([_nanmean(row[shared])
                                      for row in a["_table"]])
  for run in g["runs"]:  # written by train.py (skipped steps, never finite)
    notes += [f"arm {run['arm']}, seed {run['seed']}, learning rate "
              f"{run['learning_rate']:g}: {w}" for w in run.get("warnings", ())]
  comps = {}
  if baseline in arms:
    comps = {a: _compare(arms[a], arms[baseline], tasks, hib)
             for a in arms if a != baseline}
  elif len(arms) > 1:
    notes.append(f"baseline arm {baseline!r} not present (arms: "
                 f"{', '.join(arms)}); choose one with --baseline")
  keys = ("experiment", "dataset", "condition", "task_names",
          "selection_metric", "sources")
  return {"label": label, **{k: g[k] for k in keys}, "notes": notes,
          "shared_tasks": [tasks[j] for j in shared],
          "arms": arms, "comparisons": comps}


def _clean(obj):
  """JSON-safe copy: NaN → None, numpy → python, private "_" keys dropped."""
  if isinstance(obj, dict):
    return {str(k): _clean(v) for k, v in obj.items()
            if not str(k).startswith("_")}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def check_baseline(results: list[dict], baseline: str) -> None:
  """Raises a ReportError, listing the arms present, if no run has `baseline`.

  `summarize` only notes a missing baseline (a default "stl" may simply not
  apply, e.g. an experiment whose arms are missing-label policies); a
  baseline that the user names explicitly should exist.
  """
  arms = list(dict.fromkeys(run["arm"] for r in results for run in r["runs"]))
  if baseline not in arms:
    raise ReportError(f"baseline arm {baseline!r} is in no run; the arms "
                      f"present are: {', '.join(arms)}")


# ------------------------------------------------------------------ writing.
def _prepare_out_dir(out_dir: str) -> None:
  """Creates out_dir if needed and checks that a file can be written there.

  Checked by writing (and removing) a probe file, not with os.access: root
  passes any permission check, and a read-only mount fails only on write.
  """
  try:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
      raise NotADirectoryError(errno.ENOTDIR, "a file, not a directory")
    os.makedirs(out_dir, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".report_probe", dir=out_dir)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise ReportError(f"{out_dir}: cannot write the report there "
                      f"({e.strerror or e})") from e


def write_report(results: list[dict], out_dir: str,
                 metric: str | None = None,
                 baseline: str = "stl", title: str | None = None) -> dict:
  """Writes out_dir/report.md, report.json and PNG plots (out_dir/plots).

  Args:
    results: dicts from `load_results`.
    out_dir: output directory (created if needed).
    metric: the reported test metric (None: the runs' selection metric).
    baseline: the arm that the others are compared with.
    title: the report's heading; default from the experiment names.

  Returns:
    The summary (as `summarize`), with "plots": PNG paths relative to out_dir.

  Raises:
    ReportError: as `summarize`, or if out_dir cannot be created or written;
      both are checked before anything is written.
  """
  from mtljax.analysis import plots  # pylint: disable=g-import-not-at-top
  summary = summarize(results, metric, baseline)
  _prepare_out_dir(out_dir)
  summary["plots"] = plots.report_plots(summary, out_dir, MAX_PNGS,
                                        MAX_BAR_CHARTS_PER_EXPERIMENT)
  title = title or "mtljax report: " + ", ".join(
      dict.fromkeys(c["experiment"] for c in summary["conditions"]))
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write(markdown(summary, title))
  tmp = os.path.join(out_dir, f"report.json.tmp{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump(summary, f, indent=1, allow_nan=False)
    f.write("\n")
  os.replace(tmp, os.path.join(out_dir, "report.json"))  # never half-written
  return summary
