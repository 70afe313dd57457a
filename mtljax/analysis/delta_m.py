"""Δm of a report condition: each non-STL arm against an STL arm, per seed.

Split from report.py, whose `summarize` gives every condition a "delta_m"
entry from these functions.

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
primary metric at every remaining seed and M_stl,t,s > 0 (a relative change
against a reference at or below 0, such as an STL R² no better than the
mean's, is undefined); other tasks are skipped and named (`skipped`), and T
counts the tasks kept. No task kept: Δm is NaN (null). A reference near 0
(an R² of 0.05) still makes that task's ratio large: read Δm with the
per-task table.
"""

from __future__ import annotations

import math

import numpy as np

from mtljax.analysis import stats
from mtljax.analysis.report_arms import _ci
from mtljax.analysis.report_arms import _paired_rows
from mtljax.analysis.report_arms import _per_task_metric
from mtljax.analysis.report_arms import PRIMARY


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
    elif np.any(pb[:, j] <= 0):
      # Δm is a relative change: against a reference at or below 0 (an STL
      # R² no better than predicting the mean) it is undefined.
      i = int(np.flatnonzero(pb[:, j] <= 0)[0])
      skipped[t] = (f"its STL {m} is {pb[i, j]:.3g} at seed {seeds[i]}, not "
                    "> 0 (a relative change is undefined)")
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
