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

Δm (Maninis et al., 2019, "Attentive single-tasking of multiple tasks"): for
each seed s,

    Δm_s = (100 / T) Σ_t (−1)^{l_t} (M_arm,t,s − M_stl,t,s) / M_stl,t,s

over each task's primary test metric at the chosen rates, with l_t = 1 when
that metric is lower-is-better (the sign comes from the task type; every
built-in primary is higher-is-better, so it is +1 there). M_stl is the real
STL arm's run of the same seed (paired), not an untrained or epoch-0 model
(as LibMTL's Δm is). The reference is the baseline arm if it is an STL arm,
else the arm "stl", else the only STL arm; every non-STL arm (MTL,
partitions) gets Δm: the mean over seeds with a t-interval (`stats.mean_ci`).
Seeds run by only one of the two arms, or with no test value at all in one
of them, are left out. A task enters Δm only where both arms have its
primary metric at every remaining seed and M_stl,t,s ≠ 0; other tasks are
skipped and named (`skipped`), and T counts the tasks kept. No task kept:
Δm is NaN (null).
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile

import numpy as np

from mtljax.analysis import report_sweeps
from mtljax.analysis import stats
from mtljax.analysis.report_load import task_objects
from mtljax.tasks import types as task_types
# Re-exported: report.load_results, report.ReportError, report.SCHEMA_VERSION.
from mtljax.analysis.report_load import load_results  # noqa: F401 (re-exported)
from mtljax.analysis.report_load import ReportError
from mtljax.analysis.report_load import SCHEMA_VERSION  # noqa: F401 (re-exported)
from mtljax.analysis.report_md import markdown
from mtljax.analysis.report_sweeps import sweep_axis  # re-exported: report.sweep_axis

PRIMARY = task_types.PRIMARY

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
    objs = task_objects(r)
    tasks = [t.name for t in objs]
    key = (r["experiment"], ds.get("name"), json.dumps(cond, sort_keys=True))
    g = groups.setdefault(key, {
        "experiment": r["experiment"], "dataset": ds.get("name"),
        "condition": cond, "task_names": tasks, "tasks": objs,
        "selection_metric": r.get("selection_metric") or "auc",
        "sources": [], "runs": []})
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


def _direction(metric: str, tasks: list) -> bool:
  """Whether `metric` is higher-is-better (for the tasks that have it)."""
  if metric == PRIMARY:
    return True  # Every primary metric is higher-is-better.
  hib = [t.higher_is_better(metric) for t in tasks if metric in t.metrics]
  return hib[0] if hib else True


def _select(runs: list[dict], tasks: list[str], sel_of: dict, sign: float
            ) -> tuple[dict, dict]:
  """Chosen lr per task and the validation score of every (unit, lr).

  sel_of[t] is the validation metric task t is selected by (None: t does not
  count); sign is +1 for higher-is-better selection, else -1.
  A rate with more NaN seeds (e.g. diverged) ranks below any with fewer, so a
  rate is not rewarded for the seeds it survived; ties go to the smaller rate.
  """
  lrs = sorted({r["learning_rate"] for r in runs})
  units = _units(runs, tasks)
  chosen, scores = {}, {}
  for unit in units:
    rank, table = [], {}
    for lr in lrs:
      seeds = [_nanmean([_value(r, "val", t, sel_of[t]) for t in unit])
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
  chosen, scores = _select(runs, tasks, sel_of, sign)
  seeds = sorted({r["seed"] for r in runs})
  reported = list(metric_of)
  table = _test_table(runs, seeds, reported, chosen, metric_of)
  counts = [r.get("param_count") for r in runs if r.get("param_count")]
  return {
      "mode": mode, "seeds": seeds, "n_seeds": len(seeds),
      "param_count": int(counts[0]) if counts else None,
      "lr": {"grid": sorted({r["learning_rate"] for r in runs}),
             "per_task_selection": mode != "mtl", "chosen": chosen,
             "val_score": scores},
      "test": {"per_task": {t: _ci(table[:, j])
                            for j, t in enumerate(reported)},
               "mean": _ci([_nanmean(row) for row in table])},
      "_table": table,
      # Each task's primary test metric, for Δm.
      "_primary": _test_table(runs, seeds, tasks, chosen,
                              _per_task_metric(g["tasks"], PRIMARY)),
  }


def _verdict(d: dict, higher_is_better: bool | None) -> str:
  lo, hi = d["lo"], d["hi"]
  if math.isnan(lo) or math.isnan(hi) or lo <= 0 <= hi:
    return "no significant difference"
  if higher_is_better is None:
    return "n/a (a mean over metrics of opposite directions)"
  # "better" in the metric's own direction: a lower loss is better.
  return "better" if (lo > 0) == higher_is_better else "worse"


def _paired_rows(a: dict, b: dict, key: str
                 ) -> tuple[list, np.ndarray, np.ndarray]:
  """The seeds both arms ran, and their a[key], b[key] rows for them."""
  seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
  return (seeds, a[key][[a["seeds"].index(s) for s in seeds]],
          b[key][[b["seeds"].index(s) for s in seeds]])


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


def _delta_m(a: dict, ref: dict, g: dict) -> dict:
  """Δm of arm a against the STL arm ref, per seed (see the module doc)."""
  tasks = g["task_names"]
  prim = _per_task_metric(g["tasks"], PRIMARY)
  hib = [t.higher_is_better(prim[t.name]) for t in g["tasks"]]
  seeds, pa, pb = _paired_rows(a, ref, "_primary")
  # A seed with no test value at all in one arm is a run it lacks.
  rows = [i for i in range(len(seeds))
          if np.any(~np.isnan(pa[i])) and np.any(~np.isnan(pb[i]))]
  seeds, pa, pb = [seeds[i] for i in rows], pa[rows], pb[rows]
  keep, skipped = [], {}
  for j, t in enumerate(tasks):
    m = prim[t]
    if not seeds or np.all(np.isnan(pa[:, j])) or np.all(np.isnan(pb[:, j])):
      skipped[t] = f"not learned by both arms (no {m} in one of them)"
    elif np.any(np.isnan(pa[:, j]) | np.isnan(pb[:, j])):
      s = seeds[int(np.flatnonzero(np.isnan(pa[:, j])
                                   | np.isnan(pb[:, j]))[0])]
      skipped[t] = f"its {m} is NaN at seed {s}"
    elif np.any(pb[:, j] == 0):
      s = seeds[int(np.flatnonzero(pb[:, j] == 0)[0])]
      skipped[t] = f"its STL {m} is 0 at seed {s} (the ratio is undefined)"
    else:
      keep.append(j)
  values = [stats.relative_improvement(pa[i, keep], pb[i, keep],
                                       [hib[j] for j in keep])
            if keep else math.nan for i in range(len(seeds))]
  return {**_ci(values), "seeds": seeds, "tasks": [tasks[j] for j in keep],
          "skipped": skipped}


def _stl_reference(arms: dict, baseline: str) -> str | None:
  """The STL arm that Δm is against: the baseline if STL, "stl", the only."""
  if baseline in arms and arms[baseline]["mode"] == "stl":
    return baseline
  if "stl" in arms and arms["stl"]["mode"] == "stl":
    return "stl"
  stl = [a for a, d in arms.items() if d["mode"] == "stl"]
  return stl[0] if len(stl) == 1 else None


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
    by_arm.setdefault(run["arm"], []).append(run)
  arms = {a: _arm(rs, g, metric_of, sel_of, sign) for a, rs in by_arm.items()}
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
  keys = ("experiment", "dataset", "condition", "task_names",
          "selection_metric", "sources")
  return {"label": label, **{k: g[k] for k in keys},
          "task_types": {t.name: t.type for t in g["tasks"]},
          "task_metrics": metric_of, "task_higher_is_better": hib_of,
          "skipped_tasks": skipped, "notes": notes,
          "shared_tasks": [tasks[j] for j in shared],
          "arms": arms, "comparisons": comps, "delta_m": delta_m}


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
