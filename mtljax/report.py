"""Aggregates results.json files into CI tables, paired tests and plots.

    results = report.load_results(["/tmp/e2"])    # workdirs or sweep trees
    summary = report.summarize(results, metric="auc", baseline="stl")
    report.write_report(results, "/tmp/e2")       # report.md, .json, PNGs

Equal tuning budget: every arm picks its learning rate from its own grid by
the mean over seeds of the validation selection metric (results.json's
`selection_metric`), and only then are test metrics read. An "mtl"-mode arm is
one model, so it picks one rate by the mean over tasks; an "stl"-mode arm is T
separate networks, so each task picks its own rate. Arms are compared with the
baseline paired by seed (runs with one seed share data order and label masks),
with Holm's correction across the tasks of a condition.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from mtljax import metrics as metrics_lib
from mtljax import report_sweeps
from mtljax import stats
from mtljax.report_md import markdown
from mtljax.report_sweeps import sweep_axis  # re-exported: report.sweep_axis

SCHEMA_VERSION = 1
CONFIDENCE = 0.95
MAX_BAR_CHARTS_PER_EXPERIMENT = 6  # beyond this: first and last condition only
MAX_PNGS = 40
_RUN_KEYS = ("arm", "mode", "seed", "learning_rate", "val", "test")
_SKIP_DIRS = ("checkpoints", "tensorboard")  # big, and never hold results


# ------------------------------------------------------------------ loading.
def load_results(paths) -> list[dict]:
  """Reads results.json files: workdirs, sweep trees, or the files themselves.

  Args:
    paths: workdirs holding results.json, or directories searched recursively
      (a sweep directory), or results.json paths.

  Returns:
    One dict per file, in path order, with "source" (its path) added. A file
    reached twice (a sweep and one of its points) is read once.

  Raises:
    ValueError: naming the path, if a path has no results.json or a file is
      unreadable, malformed or of another schema_version.
  """
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  out, seen = [], set()
  for path in map(os.fspath, paths):
    if os.path.isfile(path):
      files = [path]
    elif os.path.isdir(path):
      files = []
      for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs
                         if d not in _SKIP_DIRS and not d.startswith("."))
        if "results.json" in names:
          files.append(os.path.join(root, "results.json"))
    else:
      raise ValueError(f"{path}: no such file or directory")
    if not files:
      raise ValueError(f"{path}: no results.json found (has training "
                       "finished? results.json is written at the end)")
    for f in files:
      if os.path.realpath(f) not in seen:
        seen.add(os.path.realpath(f))
        out.append(_read(f))
  return out


def _read(path: str) -> dict:
  try:
    with open(path) as f:
      r = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: not a readable results.json ({e})") from e
  if not isinstance(r, dict):
    raise ValueError(f"{path}: expected a JSON object, got {type(r).__name__}")
  if r.get("schema_version") != SCHEMA_VERSION:
    raise ValueError(f"{path}: schema_version {r.get('schema_version')!r}; "
                     f"this mtljax reads version {SCHEMA_VERSION}")
  for key in ("experiment", "runs"):
    if key not in r:
      raise ValueError(f"{path}: malformed results.json, no {key!r}")
  if not isinstance(r["runs"], list) or not r["runs"]:
    raise ValueError(f"{path}: malformed results.json, no runs")
  for i, run in enumerate(r["runs"]):
    missing = [k for k in _RUN_KEYS if k not in run]
    missing += [f"{s}.per_task" for s in ("val", "test")
                if not isinstance(run.get(s), dict) or "per_task" not in run[s]]
    if missing:
      raise ValueError(f"{path}: malformed results.json, run {i} lacks "
                       f"{', '.join(missing)}")
  return {**r, "source": path}


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
  for r in results:
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
      raise ValueError(f"{src}: task names {tasks} differ from "
                       f"{g['task_names']} of {g['sources']} (same condition)")
    have = {(x["arm"], x["seed"], x["learning_rate"]) for x in g["runs"]}
    for run in r["runs"]:
      k = (run["arm"], run["seed"], run["learning_rate"])
      if k in have:
        raise ValueError(f"{src}: run (arm, seed, lr) = {k} twice for one "
                         f"condition (also in {g['sources'] or 'this file'})")
      have.add(k)
      g["runs"].append(run)
    g["sources"].append(src)
  return list(groups.values())


def _select(runs: list[dict], tasks: list[str], sel: str, per_task: bool
            ) -> tuple[dict, dict]:
  """Chosen lr per task and the validation score of every (unit, lr).

  A rate with more NaN seeds (e.g. diverged) ranks below any with fewer, so a
  rate is not rewarded for the seeds it survived; ties go to the smaller rate.
  """
  sign = 1.0 if metrics_lib.HIGHER_IS_BETTER.get(sel, True) else -1.0
  lrs = sorted({r["learning_rate"] for r in runs})
  units = [[t] for t in tasks] if per_task else [tasks]
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
    scores[unit[0] if per_task else "mean"] = table
    chosen.update({t: best for t in unit})
  return chosen, scores


def _ci(values) -> dict:
  mean, lo, hi, n = stats.mean_ci(values, CONFIDENCE)
  return {"mean": mean, "lo": lo, "hi": hi, "n": n,
          "values": [float(v) for v in values]}


def _arm(runs: list[dict], tasks: list[str], sel: str, metric: str) -> dict:
  mode = runs[0]["mode"]
  chosen, scores = _select(runs, tasks, sel, per_task=mode == "stl")
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
             "per_task_selection": mode == "stl", "chosen": chosen,
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


def summarize(results: list[dict], metric: str = "auc",
              baseline: str = "stl") -> dict:
  """Per-condition test metrics with CIs and paired comparisons (JSON-safe).

  Args:
    results: dicts from `load_results` (or `train_and_evaluate`).
    metric: the reported test metric, one of metrics.METRICS.
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
  """
  if metric not in metrics_lib.METRICS:
    raise ValueError(f"metric {metric!r} is not one of {metrics_lib.METRICS}")
  if not results:
    raise ValueError("no results to summarize")
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


# ------------------------------------------------------------------ writing.
def write_report(results: list[dict], out_dir: str, metric: str = "auc",
                 baseline: str = "stl", title: str | None = None) -> dict:
  """Writes out_dir/report.md, report.json and PNG plots (out_dir/plots).

  Args:
    results: dicts from `load_results`.
    out_dir: output directory (created if needed).
    metric: the reported test metric.
    baseline: the arm that the others are compared with.
    title: the report's heading; default from the experiment names.

  Returns:
    The summary (as `summarize`), with "plots": PNG paths relative to out_dir.
  """
  from mtljax import plots  # pylint: disable=g-import-not-at-top
  summary = summarize(results, metric, baseline)
  os.makedirs(out_dir, exist_ok=True)
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
