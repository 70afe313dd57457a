"""The report's grouping section: which tasks should be learned together.

For one report condition it gathers every network trained on a task group:
MTL's group of all tasks, STL's single tasks, a partition arm's groups and
the grouping search's own runs (results.json `role: "grouping"`,
config.grouping.groups). Each network picks its learning rate on validation
(the mean over seeds of its tasks' selection metric, as every arm does), and
then gives each of its tasks t a validation score

    s[g, t] = 100 · sign · (val[g, t] − val[{t}, t]) / |val[{t}, t]|,

task t's relative change against its single-task network in % (Δm on
validation: sign makes higher better, and tasks of other metrics become
comparable). The search maximises Σ_t s over a selection of groups whose
task sets may overlap, each task scored by its best chosen group (Standley et
al. 2020), exactly (grouping_search.py), for every number of networks
b = 1..T and for config.grouping's parameter and FLOP budgets. Three
estimates of the same table are searched alike:

  * "exhaustive": the trained groups themselves (all 2^T − 1 of them with
    grouping.groups="all");
  * "pairs": Standley's higher-order approximation from the 1- and 2-task
    groups alone (each task's score in g is the mean of its pair scores);
  * "affinity": TAG (Fifty et al. 2021), each task's score in g the mean
    lookahead affinity Z[i→t] of g's other tasks, from the MTL runs at
    MTL's chosen learning rate.

A selection is judged on test: per seed, each task's test metric in its
assigned group, against STL (Δm, %) and against MTL (the mean metric's
paired difference), with t-intervals over seeds. Where the exhaustive table
exists, each estimate's choice also gets its true validation score and its
regret (the best score minus it).
"""

from __future__ import annotations

import math

import numpy as np

from mtljax.analysis import grouping_search as search
from mtljax.analysis import stats
from mtljax.analysis.report_arms import _ci, _nanmean, _num

# The exact search is O(3^T) over task subsets (and an estimate covers all
# 2^T - 1 groups): above this T only the affinity matrix is reported (CelebA's
# 40 attributes).
MAX_SEARCH_TASKS = 12


def _eligible(runs: list[dict], config: dict) -> list[dict]:
  """The runs whose networks are plain task groups at the search's width.

  Method arms (config.method_arms), other missing-label policies and the
  parameter-matched STL (another width) train other things than "a network
  of group g", so they are left out.
  """
  suffix = config.get("arm_suffix", "")
  # The first missing-label policy's arms (the search trains only that one).
  policy = (config.get("loss", {}).get("missing_policies") or ["mask"])[0]
  if policy != "mask":
    suffix = f"{suffix}_{policy}"
  names = {m + suffix for m in ("mtl", "stl")}
  names |= {p[0] + suffix for p in config.get("partitions", ())}
  searched = [r for r in runs if r.get("role") == "grouping"]
  widths = {r["width"] for r in searched} or {
      r["width"] for r in runs if r["arm"] == "mtl" + suffix}
  return [r for r in runs if (r.get("role") == "grouping" or r["arm"] in names)
          and r.get("width") in widths]


def _networks(runs, names, sel_of, metric_of):
  """{group: {lr: {seed: (val [T], test [T])}}, params, flops} of the runs."""
  nets: dict[tuple, dict] = {}
  for r in runs:
    params = r.get("network_param_counts") or [None] * len(r["groups"])
    flops = r.get("network_flops") or [None] * len(r["groups"])
    for k, grp in enumerate(r["groups"]):
      key = tuple(sorted(names.index(t) for t in grp))
      d = nets.setdefault(key, {"runs": {}, "params": params[k],
                                "flops": flops[k]})
      val = np.full(len(names), np.nan)
      test = np.full(len(names), np.nan)
      for t in grp:
        j = names.index(t)
        if sel_of.get(t):
          val[j] = _num(r["val"]["per_task"].get(t, {}).get(sel_of[t]))
        if metric_of.get(t):
          test[j] = _num(r["test"]["per_task"].get(t, {}).get(metric_of[t]))
      d["runs"].setdefault(r["learning_rate"], {}).setdefault(
          r["seed"], (val, test))
  return nets


def _choose(net: dict, key: tuple, sign: float, seeds: list) -> dict:
  """A network's rate (report_arms._select's rule) and its scores there."""
  rank = []
  for lr, by_seed in net["runs"].items():
    per_seed = [_nanmean(v[list(key)]) for v, _ in by_seed.values()]
    mean = _nanmean(per_seed)
    rank.append((int(np.isnan(per_seed).sum()),
                 -sign * mean if not math.isnan(mean) else math.inf, lr))
  lr = min(rank)[2]
  by_seed = net["runs"][lr]
  vals = np.stack([v for v, _ in by_seed.values()])
  ok = np.isfinite(vals)
  val = np.where(ok.any(0), np.where(ok, vals, 0.0).sum(0)
                 / np.maximum(ok.sum(0), 1), np.nan)
  test = np.full((len(seeds), len(val)), np.nan)
  for i, s in enumerate(seeds):
    if s in by_seed:
      test[i] = by_seed[s][1]
  return {"lr": lr, "val": val, "test": test}


def _relative(chosen: dict, num_tasks: int, sign: float) -> dict:
  """{group: [T] validation change vs STL in % (NaN outside the group)}."""
  out = {}
  for key, c in chosen.items():
    row = np.full(num_tasks, np.nan)
    for t in key:
      ref = chosen.get((t,))
      base = np.nan if ref is None else ref["val"][t]
      row[t] = (100.0 * sign * (c["val"][t] - base) / abs(base)
                if base and np.isfinite(base) else np.nan)
    out[key] = row
  return out


def _judge(sel, table, chosen, names, hib, seeds, best) -> dict | None:
  """A selection's groups, scores, cost and test comparisons."""
  if sel is None:
    return None
  t_all = range(len(names))
  label = lambda g: "+".join(names[t] for t in g)
  true = (search.group_value(sel.groups, table, len(names))
          if all(g in table for g in sel.groups) else math.nan)
  out = {"groups": [[names[t] for t in g] for g in sel.groups],
         "assignment": {names[t]: label(sel.assignment[t]) for t in t_all},
         "estimate": sel.value, "val": true,
         "regret": best - true if np.isfinite(true) else math.nan,
         "params": _sum(chosen, sel.groups, "params"),
         "flops": _sum(chosen, sel.groups, "flops")}
  if not all(g in chosen for g in sel.groups):
    return out  # not trained (an estimate beyond the trained groups)
  x = np.stack([chosen[sel.assignment[t]]["test"][:, t] for t in t_all], 1)
  for ref, key in (("stl", None), ("mtl", tuple(t_all))):
    if ref == "stl":
      if not all((t,) in chosen for t in t_all):
        continue
      y = np.stack([chosen[(t,)]["test"][:, t] for t in t_all], 1)
      out["delta_m"] = _ci([stats.relative_improvement(x[i], y[i], hib)
                            for i in range(len(seeds))])
    elif key in chosen:
      # Signed per task (a lower-is-better metric's difference flipped), so
      # that > 0 is better, as for Δm.
      sgn = np.where(hib, 1.0, -1.0)
      y = chosen[key]["test"]
      out["vs_mtl"] = _ci([_nanmean(sgn * (x[i] - y[i]))
                           for i in range(len(seeds))])
  out["test_mean"] = _ci([_nanmean(row) for row in x])
  out["test_per_task"] = {names[t]: _ci(x[:, t]) for t in t_all}
  return out


def _sum(chosen, groups, field):
  vals = [chosen[g][field] if g in chosen else None for g in groups]
  return None if any(v is None for v in vals) else float(sum(vals))


def _affinity(runs, names, mtl_lr):
  """Mean Z over the MTL runs at its chosen rate (and their count)."""
  rows = [r for r in runs if r.get("affinity") is not None
          and r["learning_rate"] == mtl_lr]
  if not rows:
    return None
  z = np.asarray([[[np.nan if v is None else v for v in row]
                   for row in r["affinity"]] for r in rows], np.float64)
  ok = np.isfinite(z)
  n = ok.sum(axis=0)
  matrix = np.where(n > 0, np.where(ok, z, 0.0).sum(0) / np.maximum(n, 1),
                    np.nan)
  return {"matrix": matrix, "seeds": len(rows), "learning_rate": mtl_lr,
          "measurements": int(min(r.get("affinity_measurements", 0)
                                  for r in rows)),
          "order": cluster_order(matrix)}


def cluster_order(z: np.ndarray) -> list[int]:
  """Task order that puts mutually helpful tasks next to each other.

  Average-linkage clustering of the symmetrised affinity (higher: closer);
  the leaves' order of its dendrogram.
  """
  from scipy.cluster import hierarchy  # pylint: disable=g-import-not-at-top
  t = z.shape[0]
  if t < 3:
    return list(range(t))
  sym = np.nan_to_num((z + z.T) / 2.0)
  dist = sym.max() - sym
  cond = dist[np.triu_indices(t, 1)]
  return [int(i) for i in hierarchy.leaves_list(
      hierarchy.linkage(cond, method="average"))]


def summarize(g: dict, runs: list[dict], metric_of: dict, sel_of: dict,
              sign: float, hib_of: dict) -> dict | None:
  """The grouping section of one condition (None: no grouping data).

  Args:
    g: the report's condition (task_names, tasks, config).
    runs: its run entries.
    metric_of / sel_of: {task: reported test metric / selection metric}.
    sign: +1 if the selection metric is higher-is-better, else -1.
    hib_of: {task: whether its reported metric is higher-is-better}.
  """
  config = g.get("config") or {}
  gcfg = config.get("grouping") or {}
  names = list(g["task_names"])
  t_count = len(names)
  if not (gcfg.get("groups") or any(r.get("affinity") for r in runs)):
    return None
  runs = _eligible(runs, config)
  seeds = sorted({r["seed"] for r in runs})
  nets = _networks(runs, names, sel_of, metric_of)
  chosen = {k: {**_choose(n, k, sign, seeds), "params": n["params"],
                "flops": n["flops"]} for k, n in nets.items()}
  table = _relative(chosen, t_count, sign)
  hib = [hib_of.get(t, True) for t in names]
  mtl = chosen.get(tuple(range(t_count)))
  aff = _affinity(runs, names, mtl["lr"] if mtl else None)
  if t_count > MAX_SEARCH_TASKS:
    return {"tasks": names, "complete": False, "num_trained": len(table),
            "num_groups": 2 ** t_count - 1, "seeds": seeds, "methods": [],
            "networks": {}, "by_networks": [], "budgets": [],
            "affinity": None if aff is None else {
                **aff, "matrix": aff["matrix"].tolist()},
            "cost": {"exhaustive": 2 ** t_count - 1,
                     "pairs": t_count * (t_count + 1) // 2, "affinity": 1},
            "note": f"T = {t_count} tasks: the exact search (O(3^T)) is out "
                    f"of reach above T = {MAX_SEARCH_TASKS}; the affinity "
                    "matrix only"}
  everything = search.all_groups(t_count)
  complete = all(k in table and np.isfinite(table[k][list(k)]).all()
                 for k in everything)
  keys = [k for k in table if np.isfinite(table[k][list(k)]).any()]
  scores = np.stack([table[k] for k in keys]) if keys else None
  by_b = (search.selections_by_networks(keys, scores, t_count) if keys
          else {b: None for b in range(1, t_count + 1)})
  estimates = {"exhaustive": by_b}
  pairs_ok = all(k in table for k in search.all_groups(t_count, 2))
  if pairs_ok:
    est = search.estimate_from_pairs(
        t_count, np.zeros(t_count),
        {k: table[k] for k in table if len(k) == 2})
    estimates["pairs"] = search.selections_by_networks(
        list(est), np.stack(list(est.values())), t_count)
  if aff is not None:
    est = search.estimate_from_affinity(t_count, aff["matrix"])
    estimates["affinity"] = search.selections_by_networks(
        list(est), np.stack(list(est.values())), t_count)
  rows = []
  for b in range(1, t_count + 1):
    best = by_b[b].value if (complete and by_b[b]) else math.nan
    rows.append({"networks": b, **{
        m: _judge(sel[b], table, chosen, names, hib, seeds, best)
        for m, sel in estimates.items()}})
  budgets = []
  for field, kind in (("param_budgets", "params"), ("flop_budgets", "flops")):
    costs = [chosen[k][kind] for k in keys]
    for budget in gcfg.get(field, ()):
      sel = (search.best_selection(keys, scores, t_count, costs=costs,
                                   budget=budget)
             if keys and None not in costs else None)
      budgets.append({"kind": kind, "budget": budget, "exhaustive": _judge(
          sel, table, chosen, names, hib, seeds, math.nan)})
  label = lambda k: "+".join(names[t] for t in k)
  return {
      "tasks": names, "complete": complete, "num_trained": len(keys),
      "num_groups": len(everything), "seeds": seeds,
      "methods": list(estimates),
      "networks": {label(k): {"lr": chosen[k]["lr"], "params":
                              chosen[k]["params"], "flops": chosen[k]["flops"],
                              "val_change": {names[t]: table[k][t] for t in k}}
                   for k in sorted(keys, key=lambda k: (len(k), k))},
      "by_networks": rows, "budgets": budgets,
      "affinity": None if aff is None else {
          **aff, "matrix": aff["matrix"].tolist()},
      "cost": {"exhaustive": len(everything),
               "pairs": t_count * (t_count + 1) // 2, "affinity": 1},
  }
