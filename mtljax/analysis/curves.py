"""Learning curves: validation metric against step, per arm and per task.

Read from each source's metrics.jsonl (its "per_task" validation log: every
run's value of each task it learns, `run/results.val_per_task`), at each
arm's learning rate chosen for that task (the report's selection), with a
95% t-interval over seeds at every evaluated step. This is the plot that
tells slower learning (a gap that closes with more steps) from a worse end
point (a gap that stays).

    curves = load_curves(condition)   # {arm: {task: (steps, mean, lo, hi)}}
    plot_curves(condition, curves, "plots/x_curves.png")

Workdirs written before the per-task log have no curves; they are skipped.
"""

from __future__ import annotations

import json
import os

import numpy as np

from mtljax.analysis import stats


def _records(source: str) -> list[dict]:
  path = os.path.join(os.path.dirname(source), "metrics.jsonl")
  if not os.path.isfile(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      try:
        r = json.loads(line)
      except ValueError:
        continue  # a line cut short by a kill: the rest is still good
      if r.get("kind") == "validation" and "per_task" in r:
        out.append(r)
  return out


def load_curves(c: dict) -> dict:
  """{arm: {task: (steps [K], mean [K], lo [K], hi [K])}} of a condition.

  Args:
    c: a summarized condition (report.summarize): its "sources", "arms"
      (with each arm's chosen learning rate per task) and "task_metrics".
  """
  # (arm, task, lr) -> {step: {seed: value}}, over every source (seeds may
  # come from several workdirs of one condition).
  raw: dict = {}
  for src in c.get("sources", []):
    for r in _records(src):
      for arm, by_task in r["per_task"].items():
        for task, runs in by_task.items():
          for key, value in runs.items():
            seed, _, lr = key.partition("_lr")  # lr as logged: f"{lr:g}"
            raw.setdefault((arm, task, lr), {}).setdefault(
                r["step"], {})[seed] = value
  out: dict = {}
  for arm, a in c.get("arms", {}).items():
    for task in c.get("task_metrics", {}):
      lr = a["lr"]["chosen"].get(task)
      series = raw.get((arm, task, f"{lr:g}")) if lr is not None else None
      if not series:
        continue
      steps = sorted(series)
      cis = [stats.mean_ci([v for v in series[s].values() if v is not None])
             for s in steps]
      out.setdefault(arm, {})[task] = tuple(
          np.asarray(x, np.float64) for x in (
              steps, [m for m, *_ in cis], [lo for _, lo, _, _ in cis],
              [hi for _, _, hi, _ in cis]))
  return out


def plot_curves(c: dict, curves: dict, path: str, colors=None) -> str | None:
  """One panel per task: each arm's validation curve with its CI band."""
  from mtljax.analysis import plots  # pylint: disable=g-import-not-at-top
  tasks = [t for t in c.get("task_metrics", {})
           if any(t in by for by in curves.values())]
  if not tasks:
    return None
  plt = plots.plt
  n = len(tasks)
  cols = min(n, 5)
  rows = -(-n // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows + 0.6),
                           squeeze=False)
  sel = c.get("selection_metric", "")
  for k, task in enumerate(tasks):
    ax = axes[k // cols][k % cols]
    for i, (arm, by) in enumerate(curves.items()):
      if task not in by:
        continue
      steps, mean, lo, hi = by[task]
      color = plots._color(colors, arm, i)  # pylint: disable=protected-access
      ax.plot(steps, mean, marker="o", markersize=3, color=color, label=arm)
      ok = np.isfinite(lo) & np.isfinite(hi)
      if ok.any():
        # A t-interval can pass the metric's bound (AUC above 1 near the
        # ceiling); drawn there it would show values no run can reach.
        lo_b, hi_b = plots.bounds_of([c["task_metrics"][task]])
        ax.fill_between(steps, np.clip(lo, lo_b, hi_b),
                        np.clip(hi, lo_b, hi_b), where=ok, color=color,
                        alpha=0.2, linewidth=0)
    ax.set_title(task, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)
    if k % cols == 0:
      ax.set_ylabel(f"validation {sel}", fontsize=8)
  for k in range(n, rows * cols):
    axes[k // cols][k % cols].axis("off")
  # One legend for the figure: an arm that learns only some tasks (STL of
  # a target) is missing from the first panel.
  handles = {}
  for ax in axes.flat:
    for h, lab in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(lab, h)
  fig.legend(list(handles.values()), list(handles), fontsize=7,
             loc="lower center", ncol=min(len(handles), 6), frameon=False)
  title = (f"{c['experiment']} — {c['label']}: validation per task (95% CI "
           "over seeds, within the metric's range; each arm at its chosen "
           "rate)")
  fig.suptitle(plots.wrap(fig, title, 9), fontsize=9)
  # pylint: disable-next=protected-access
  return plots._save(fig, path, rect=(0, 0.06, 1, 0.95))
