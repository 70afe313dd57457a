"""Sweeps inside a report: condition labels, the swept axis, per-arm series.

Split from report.py: `summarize` groups conditions by experiment and, when
they vary along one numeric field, `sweep_axis` finds it and `sweep` gathers
each arm's mean test metric (and each comparison's mean difference) along it
for the plots.
"""

from __future__ import annotations

import json
import math

import numpy as np


def _varying(conds: list[dict]) -> tuple[list[str], list[str]]:
  """(all keys, keys whose value differs between conditions)."""
  keys = list(dict.fromkeys(k for c in conds for k in c))
  return keys, [k for k in keys if len(
      {json.dumps(c.get(k), sort_keys=True) for c in conds}) > 1]


def labels(conds: list[dict]) -> list[str]:
  """Short condition labels: only the keys that vary within the experiment."""
  keys, vary = _varying(conds)
  return [", ".join(f"{k.split('.')[-1]}={_short(c.get(k))}"
                    for k in vary or keys) or "default" for c in conds]


def _short(v) -> str:
  if isinstance(v, (list, tuple)):
    return "(" + ",".join(_short(x) for x in v) + ")"
  return f"{v:g}" if isinstance(v, float) else str(v)


def _is_num(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def sweep_axis(conds: list[dict], task_names=()) -> tuple[str, list] | None:
  """(field label, x values) if the conditions vary along one numeric field.

  A list-valued field (e.g. data.label_budget per task) counts when, in every
  condition, the entries that vary across conditions share one value: then x
  is that value, e.g. the auxiliary tasks' budget in (200, a, a, a).
  """
  vary = _varying(conds)[1]
  if len(conds) < 2 or len(vary) != 1:
    return None
  field, vals = vary[0], [c.get(vary[0]) for c in conds]
  x, label = None, field
  if all(_is_num(v) for v in vals):
    x = [float(v) for v in vals]
  elif (all(isinstance(v, (list, tuple)) and v and all(map(_is_num, v))
            for v in vals)
        and len({len(v) for v in vals}) == 1):
    arr = np.asarray(vals, dtype=np.float64)
    cols = [j for j in range(arr.shape[1]) if len(set(arr[:, j])) > 1]
    if all(len(set(row[cols])) == 1 for row in arr):
      x = [float(v) for v in arr[:, cols[0]]]
      if arr.shape[1] > 1:
        names = (list(task_names) if len(task_names) == arr.shape[1]
                 else list(map(str, range(arr.shape[1]))))
        label = f"{field} [{', '.join(names[j] for j in cols)}]"
  if x is None or len(set(x)) != len(x):
    return None
  return label, x


def sweep(exp: str, field: str, x: list, block: list[dict], start: int
           ) -> dict:
  """Per-arm mean test metric and per-comparison mean diff along x."""
  nan = {"mean": math.nan, "lo": math.nan, "hi": math.nan,
         "mean_diff": math.nan}
  arms = list(dict.fromkeys(a for c in block for a in c["arms"]))
  comps = list(dict.fromkeys(a for c in block for a in c["comparisons"]))
  def pick(c, a):
    if a not in c["arms"]:
      return nan
    test = c["arms"][a]["test"]
    return test.get("mean_shared", test["mean"])
  def pick_diff(c, a):
    return c["comparisons"][a]["mean"] if a in c["comparisons"] else nan
  # Over the reported tasks (a metric some tasks lack skips them).
  reported = list(block[0]["task_metrics"])
  shared = [t for t in reported if all(t in c["shared_tasks"] for c in block)]
  return {
      "experiment": exp, "field": field, "x": x,
      "tasks": shared if len(shared) < len(reported) else None,
      "conditions": list(range(start, start + len(block))),
      "arms": {a: {k: [pick(c, a)[k] for c in block]
                   for k in ("mean", "lo", "hi")} for a in arms},
      "diffs": {a: {k: [pick_diff(c, a)["mean_diff" if k == "mean" else k]
                        for c in block] for k in ("mean", "lo", "hi")}
                for a in comps}}
