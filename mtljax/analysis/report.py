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

Task types: results.json's `dataset.tasks` gives each task's type (files
written before task types lack it: every task is binary). Each task is
reported in its own metric: with `metric=None`, the runs' selection metric
when every task has it (so all-binary results read as before), otherwise
`"primary"`: each task's primary metric (AUC for binary, accuracy for
multiclass, R² for regression; all higher-is-better). A named metric is
reported for the tasks that have it; the others are skipped with a note.
Learning rates are selected by the selection metric, which may be
`"primary"` (the mean over a unit's tasks of each task's primary metric).

Δm (Maninis et al., 2019), each non-STL arm against an STL arm paired by
seed, is computed in delta_m.py (see its module doc); one arm's rate
selection and test table in report_arms.py.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile

import numpy as np

from mtljax.analysis import grouping as grouping_lib
from mtljax.analysis import report_sweeps
from mtljax.analysis import stats
from mtljax.analysis.delta_m import _delta_m
from mtljax.analysis.delta_m import _stl_reference
from mtljax.analysis.report_load import task_objects
from mtljax.tasks import types as task_types
# Re-exported: report.load_results, report.ReportError, report.SCHEMA_VERSION.
from mtljax.analysis.report_load import load_results  # noqa: F401 (re-exported)
from mtljax.analysis.report_load import ReportError
from mtljax.analysis.report_load import SCHEMA_VERSION  # noqa: F401 (re-exported)
from mtljax.analysis.report_md import markdown
from mtljax.analysis.report_arms import _arm
from mtljax.analysis.report_arms import _ci
from mtljax.analysis.report_arms import _nanmean
from mtljax.analysis.report_arms import _paired_rows
from mtljax.analysis.report_arms import _per_task_metric
from mtljax.analysis.report_arms import CONFIDENCE  # also report.CONFIDENCE
from mtljax.analysis.report_sweeps import sweep_axis  # re-exported: report.sweep_axis

PRIMARY = task_types.PRIMARY

MAX_BAR_CHARTS_PER_EXPERIMENT = 6  # beyond this: first and last condition only
MAX_PNGS = 40


# --------------------------------------------------------------- summarizing.
def _group(results: list[dict]) -> list[dict]:
  """Merges results by (experiment, dataset, condition); runs are pooled."""
  groups: dict[tuple, dict] = {}
  origin: dict[tuple, dict] = {}  # group key -> {(arm, seed, lr): (i, source)}
  for i, r in enumerate(results):
    cond = r.get("condition") or {}
    ds = r.get("dataset") or {}
    objs = task_objects(r)
    tasks = [t.name for t in objs]
    key = (r["experiment"], ds.get("name"), json.dumps(cond, sort_keys=True))
    g = groups.setdefault(key, {
        "experiment": r["experiment"], "dataset": ds.get("name"),
        "condition": cond, "task_names": tasks, "tasks": objs,
        "selection_metric": r.get("selection_metric") or "auc",
        "config": r.get("config") or {}, "sources": [], "runs": []})
    src = r.get("source", "<in memory>")
    if tasks != g["task_names"]:
      raise ReportError(f"{src}: task names {tasks} differ from "
                        f"{g['task_names']} of {g['sources']} (same condition)")
    if objs != g["tasks"]:
      raise ReportError(
          f"{src}: task types {[t.to_json() for t in objs]} differ from "
          f"{[t.to_json() for t in g['tasks']]} of {g['sources']} (same "
          "condition)")
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


def _direction(metric: str, tasks: list) -> bool:
  """Whether `metric` is higher-is-better (for the tasks that have it)."""
  if metric == PRIMARY:
    return True  # Every primary metric is higher-is-better.
  hib = [t.higher_is_better(metric) for t in tasks if metric in t.metrics]
  return hib[0] if hib else True


def _verdict(d: dict, higher_is_better: bool | None) -> str:
  lo, hi = d["lo"], d["hi"]
  if math.isnan(lo) or math.isnan(hi) or lo <= 0 <= hi:
    return "no significant difference"
  if higher_is_better is None:
    return "n/a (a mean over metrics of opposite directions)"
  # "better" in the metric's own direction: a lower loss is better.
  return "better" if (lo > 0) == higher_is_better else "worse"


def _compare(a: dict, b: dict, tasks: list[str], hib_of: dict) -> dict:
  """a − b paired by seed on the reported tasks (hib_of: their direction)."""
  seeds, ta, tb = _paired_rows(a, b, "_table")
  dirs = set(hib_of.values())
  hib = dirs.pop() if len(dirs) == 1 else (None if dirs else True)
  per_task = {t: stats.paired_diff(ta[:, j], tb[:, j], CONFIDENCE)
              for j, t in enumerate(tasks)}
  adj = stats.holm([per_task[t]["p_value"] for t in tasks])
  for t, p in zip(tasks, adj):
    d = per_task[t]
    d["p_holm"] = float(p)
    # Per task, a verdict must survive the multiple-testing correction: with
    # T tasks, one unadjusted CI in T excludes 0 by chance far more than 5%.
    sig = p < 1 - CONFIDENCE
    d["verdict"] = (_verdict(d, hib_of[t]) if sig
                    else "no significant difference")
  # The mean is over the tasks both arms learn: an STL arm restricted to
  # some tasks (config.stl_tasks) is compared with MTL on those tasks only.
  both = [j for j in range(len(tasks))
          if np.any(~np.isnan(ta[:, j])) and np.any(~np.isnan(tb[:, j]))]
  ta, tb = ta[:, both], tb[:, both]
  mean = stats.paired_diff([_nanmean(r) for r in ta],
                           [_nanmean(r) for r in tb], CONFIDENCE)
  hib_both = [hib_of[tasks[j]] for j in both]
  dp = _ci([stats.relative_improvement(ta[i], tb[i], hib_both)
            for i in range(len(seeds))])
  return {"seeds": seeds, "per_task": per_task, "mean": mean, "delta_p": dp,
          "tasks": [tasks[j] for j in both], "verdict": _verdict(mean, hib)}


def summarize(results: list[dict], metric: str | None = None,
              baseline: str = "stl") -> dict:
  """Per-condition test metrics with CIs and paired comparisons (JSON-safe).

  Args:
    results: dicts from `load_results` (or `train_and_evaluate`).
    metric: the reported test metric: a metric of some task ("auc", "mse",
      ...; tasks without it are skipped with a note) or "primary" (each task
      its own primary metric); None: the runs' selection metric if every
      task has it, else "primary".
    baseline: the arm every other arm is compared with, paired by seed.

  Returns:
    {"metric", "higher_is_better", "baseline", "confidence", "conditions":
    [{"experiment", "dataset", "condition", "label", "task_names",
    "task_types": {task: type}, "task_metrics": {task: metric} (the reported
    tasks, in order: every "per_task" below is over these),
    "task_higher_is_better": {task: bool}, "skipped_tasks": {task: why},
    "selection_metric", "sources", "notes", "shared_tasks", "arms": {arm:
    {"mode", "seeds", "n_seeds", "param_count", "lr": {"grid",
    "per_task_selection", "chosen": {task: lr}, "val_score"}, "test":
    {"per_task": {task: CI}, "mean": CI, "mean_shared": CI (only when some
    arm learns fewer tasks)}}}, "comparisons": {arm: {"seeds", "tasks",
    "per_task": {task: paired_diff + p_holm + verdict}, "mean": paired_diff
    (over "tasks", those both arms learn), "delta_p": CI, "verdict"}},
    "delta_m": {"reference": the STL arm or None, "metrics": {task: primary
    metric}, "arms": {arm: CI (per-seed Δm in %) + "seeds", "tasks" (those
    in Δm), "skipped": {task: why}}}}],
    "sweeps": [{"experiment", "field", "x", "tasks" (None: all; else the
    tasks the arms' means are over), "conditions": indices, "arms": {arm:
    {"mean", "lo", "hi"}}, "diffs": {arm: {"mean", "lo", "hi"}}}]}, where CI
    = {"mean", "lo", "hi", "n", "values"} and NaN is None. Conditions of a
    sweep are ordered along its field.

  Raises:
    ReportError: on a metric no task has, no results, task names or types
      that differ within a condition, a malformed `dataset.tasks`, or one (arm, seed, lr) run twice in a condition (e.g. a
      workdir and its copy), naming both places.
  """
  if not results:
    raise ReportError("no results to summarize")
  all_tasks = [t for r in results for t in task_objects(r)]
  if metric is None:
    metric = results[0].get("selection_metric") or "auc"
    if metric != PRIMARY and not all(metric in t.metrics for t in all_tasks):
      metric = PRIMARY
    primaries = {t.primary_metric for t in all_tasks}
    if metric == PRIMARY and len(primaries) == 1:
      metric = primaries.pop()  # One type: its primary, e.g. "auc".
  available = list(dict.fromkeys(m for t in all_tasks for m in t.metrics))
  if metric != PRIMARY and metric not in available:
    raise ReportError(
        f"metric {metric!r} is no task's metric; the tasks' metrics are "
        f"{', '.join(available)}, or {PRIMARY!r} (each task's own primary "
        "metric)")
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
                 "higher_is_better": _direction(metric, all_tasks),
                 "baseline": baseline, "confidence": CONFIDENCE,
                 "conditions": conditions, "sweeps": sweeps})


def _condition(g: dict, label: str, metric: str, baseline: str) -> dict:
  notes = []
  objs = {t.name: t for t in g["tasks"]}
  metric_of, skipped = {}, {}
  for t, m in _per_task_metric(g["tasks"], metric).items():
    if m is None:
      skipped[t] = (f"a {objs[t].type} task has no {metric} (its metrics: "
                    f"{', '.join(objs[t].metrics)})")
      notes.append(f"task {t!r} is skipped: {skipped[t]}")
    else:
      metric_of[t] = m
  tasks = list(metric_of)  # the reported tasks
  hib_of = {t: objs[t].higher_is_better(m) for t, m in metric_of.items()}
  sel = g["selection_metric"]
  sel_of = _per_task_metric(g["tasks"], sel)
  for t, m in sel_of.items():
    if m is None:
      notes.append(f"task {t!r} ({objs[t].type}) has no selection metric "
                   f"{sel!r}: it does not count in learning-rate selection")
  sign = 1.0 if _direction(sel, g["tasks"]) else -1.0
  by_arm: dict[str, list] = {}
  for run in g["runs"]:
    # The grouping search's networks are read by its own section.
    if run.get("role") != "grouping":
      by_arm.setdefault(run["arm"], []).append(run)
  arms = {a: _arm(rs, g, metric_of, sel_of, sign) for a, rs in by_arm.items()}
  grids = {tuple(a["lr"]["grid"]) for a in arms.values()}
  if grids and max(len(gr) for gr in grids) == 1:
    notes.append("one learning rate for every arm: the rate was not tuned")
  for name, a in arms.items():
    edge = a["lr"]["at_edge"]
    for side in ("lowest", "highest"):
      ts = [t for t, e in edge.items() if e == side]
      if ts:
        notes.append(
            f"arm {name}: the chosen learning rate is the {side} of its grid "
            f"for {', '.join(ts)}: the grid may not bracket the optimum")
  if len(grids) > 1:
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
    comps = {a: _compare(arms[a], arms[baseline], tasks, hib_of)
             for a in arms if a != baseline}
  elif len(arms) > 1:
    notes.append(f"baseline arm {baseline!r} not present (arms: "
                 f"{', '.join(arms)}); choose one with --baseline")
  ref = _stl_reference(arms, baseline)
  delta_m = {"reference": ref,
             "metrics": _per_task_metric(g["tasks"], PRIMARY),
             "arms": {a: _delta_m(arms[a], arms[ref], g) for a in arms
                      if ref is not None and arms[a]["mode"] != "stl"}}
  grouping = grouping_lib.summarize(g, g["runs"], metric_of, sel_of, sign,
                                   hib_of)
  keys = ("experiment", "dataset", "condition", "task_names",
          "selection_metric", "sources")
  return {"label": label, **{k: g[k] for k in keys},
          "task_types": {t.name: t.type for t in g["tasks"]},
          "task_metrics": metric_of, "task_higher_is_better": hib_of,
          "skipped_tasks": skipped, "notes": notes,
          "shared_tasks": [tasks[j] for j in shared],
          "arms": arms, "comparisons": comps, "delta_m": delta_m,
          **({"grouping": grouping} if grouping else {})}


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
