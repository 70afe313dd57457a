"""results.json: the run entries that train_and_evaluate writes, and log means.

One entry per (arm, seed, learning rate). An arm is a partition of the tasks
into groups, one network per group: task t's metrics, best step and
skipped-step count come from the network whose group holds t (the README's
"Outputs and the results schema" lists every field).
"""

from __future__ import annotations

import numpy as np

from mtljax.core import runs as runs_lib
from mtljax.tasks import types as types_lib

SCHEMA_VERSION = 1


def _metric_of(task, metric: str) -> str:
  """The metric a task is scored in: its own primary under "primary"."""
  if metric == types_lib.PRIMARY and task is not None:
    return task.primary_metric
  return metric


def val_arm_means(p, per_run, metric: str, tasks=None) -> dict:
  """{arm: {metric: mean over its runs and tasks}} for the validation log."""
  out = {}
  tasks_all = tasks
  for arm in dict.fromkeys(g.arm for g in p.prog.groups):
    idx = [i for i, g in enumerate(p.prog.groups) if g.arm == arm]
    vals = []
    for runs in per_run:
      for g in idx:
        tasks = p.prog.groups[g].tasks
        names = list(runs[g]["per_task"])
        vals += [runs[g]["per_task"][names[t]].get(_metric_of(
            None if tasks_all is None else tasks_all[t], metric),
            float("nan")) for t in tasks]
    out[arm] = {metric: float(np.nanmean(vals)) if vals else float("nan")}
  return out


def val_per_task(p, per_run, seeds, metric: str, tasks=None) -> dict:
  """{arm: {task: {"seed<s>_lr<lr>": value}}} for the validation log.

  Every run's value of each task it learns (the selection metric, each
  task's own primary under "primary"), so that learning curves can be drawn
  per task and per seed with a CI over seeds, not only from arm means.
  """
  out: dict = {}
  for g, gr in enumerate(p.prog.groups):
    for s, runs in enumerate(per_run):
      names = list(runs[g]["per_task"])
      for t in gr.tasks:
        value = runs[g]["per_task"][names[t]].get(_metric_of(
            None if tasks is None else tasks[t], metric), float("nan"))
        out.setdefault(gr.arm, {}).setdefault(names[t], {})[
            f"seed{int(seeds[s])}_lr{gr.learning_rate:g}"] = float(value)
  return out


def _nanmean(values) -> float:
  v = np.asarray(values, np.float64)
  return float(np.nanmean(v)) if np.any(~np.isnan(v)) else float("nan")


def _combine(metric_dicts: list[dict], tasks: list[int], names,
             task_objs=None) -> dict:
  """One task_metrics dict whose task t comes from metric_dicts[i] (tasks[i]).

  Its means are over the tasks that have each metric, and "primary" over
  each task's own primary metric, as `metrics.typed_metrics` computes them
  for one network.
  """
  per_task = {names[t]: metric_dicts[i]["per_task"][names[t]]
              for i, t in enumerate(tasks)}
  keys = list(dict.fromkeys(k for d in per_task.values() for k in d))
  mean = {k: _nanmean([d[k] for d in per_task.values() if k in d])
          for k in keys}
  if task_objs is not None:
    mean[types_lib.PRIMARY] = _nanmean(
        [per_task[names[t]][task_objs[t].primary_metric] for t in tasks])
  return {"per_task": per_task, "mean": mean}


def run_warnings(skipped, finite, tc) -> list[str]:
  """Why a run's results may not mean what they seem (results and report)."""
  out = []
  share = skipped / tc.steps
  if skipped and share > tc.warn_skipped_share:
    out.append(f"{skipped} of {tc.steps} steps ({share:.0%}) were skipped as "
               "non-finite (config.train.warn_skipped_share="
               f"{tc.warn_skipped_share:g})")
  if not finite:
    out.append("no validation score was ever finite: its results are of its "
               "initial weights")
  return out


def run_entries(p, seeds, val, test, best_step, names, skipped, finite,
                 tc, tasks=None, affinity=None) -> list[dict]:
  """results.json run entries: one per (arm, seed, learning rate).

  An arm is a partition of the tasks into groups, one network per group:
  task t's metrics, best step and skipped-step count come from the network
  whose group holds t, and the arm's parameter count is the sum over its
  networks. One network of every task (MTL) is reported as it was
  evaluated. `warnings` lists each network's warnings. `affinity`
  ({group index: ([S, T, T] mean Z, [S] counts)}, core/affinity.Meter)
  adds each measured MTL run's "affinity" matrix (Z[i][j], None where not
  measured) and "affinity_measurements".
  """
  entries = []
  groups = p.prog.groups
  for arm, lr in dict.fromkeys((g.arm, g.learning_rate) for g in groups):
    idx = [i for i, g in enumerate(groups)
           if (g.arm, g.learning_rate) == (arm, lr)]
    mode = runs_lib.arm_mode([groups[g] for g in idx])
    # (task, the group index that learns it), in group then task order.
    owner = [(t, g) for g in idx for t in groups[g].tasks]
    for s, seed in enumerate(seeds):
      if mode == "mtl":
        v, te = val[s][idx[0]], test[s][idx[0]]
      else:
        order = [t for t, _ in owner]
        v = _combine([val[s][g] for _, g in owner], order, names, tasks)
        te = _combine([test[s][g] for _, g in owner], order, names, tasks)
      warnings = []
      for g in idx:
        prefix = ("" if mode == "mtl" else "group " + "+".join(
            names[t] for t in groups[g].tasks) + ": ")
        warnings += [prefix + w for w in run_warnings(
            int(skipped[s, g]), bool(finite[s, g]), tc)]
      entries.append({
          "arm": arm, "mode": mode, "seed": int(seed), "learning_rate": lr,
          "width": int(p.prog.model_cfg.width),
          "param_count": int(sum(p.param_counts[g] for g in idx)),
          "groups": [[names[t] for t in groups[g].tasks] for g in idx],
          "network_param_counts": [int(p.param_counts[g]) for g in idx],
          "best_step": [int(best_step[s, g]) for _, g in owner],
          "nonfinite_skipped": [int(skipped[s, g]) for _, g in owner],
          "warnings": warnings, "val": v, "test": te})
      if any(groups[g].role for g in idx):
        entries[-1]["role"] = groups[idx[0]].role
      if getattr(p, "flops", None) is not None:
        entries[-1]["network_flops"] = [float(p.flops[g]) for g in idx]
      if affinity and mode == "mtl" and idx[0] in affinity:
        z, n = affinity[idx[0]]
        entries[-1]["affinity"] = [
            [None if not np.isfinite(x) else float(x) for x in row]
            for row in z[s]]
        entries[-1]["affinity_measurements"] = int(n[s])
  return entries
