"""The report's grouping section against an independent brute force.

Synthetic results.json: 3 binary tasks, every one of the 7 task groups
trained as a network (2 seeds × 2 learning rates, one rate clearly better on
validation for each group), and MTL runs with an affinity matrix. The
section's choices for b = 1..3 networks must equal a brute force over every
set of at most b groups (each task scored by its best chosen group, in %
against its single-task network, as grouping.py defines), its test Δm must
be Maninis' formula on the chosen networks, and the pair (HOA) and TAG
estimates must follow their definitions.
"""

import itertools

import numpy as np

from mtljax.analysis import report
from mtljax.tasks import types as task_types

NAMES = ["a", "b", "c"]
SEEDS = [0, 1]
LRS = [1e-3, 1e-2]
GROUPS = [g for k in (1, 2, 3) for g in itertools.combinations(range(3), k)]
RNG = np.random.default_rng(7)
# Validation AUC of task t in group g at the good rate (1e-2), per seed.
VAL = {g: {t: 0.7 + 0.2 * RNG.random(2) for t in g} for g in GROUPS}
TEST = {g: {t: 0.7 + 0.2 * RNG.random(2) for t in g} for g in GROUPS}
Z = np.array([[5.0, 2.0, -1.0], [1.0, 4.0, -2.0], [-3.0, -1.0, 6.0]]) * 1e-4


def _split(values):
  per = {NAMES[t]: {"auc": float(v), "loss": 0.5} for t, v in values.items()}
  return {"per_task": per, "mean": {"auc": float(np.mean(list(
      values.values())))}}


def _results():
  runs = []
  for g in GROUPS:
    arm = ("mtl" if len(g) == 3 else "stl" if len(g) == 1
           else "g_" + "_".join(map(str, g)))
    for lr in LRS:
      bad = 0.0 if lr == 1e-2 else 0.2  # the small rate loses everywhere
      for i, s in enumerate(SEEDS):
        runs.append({
            "arm": arm, "mode": {"mtl": "mtl", "stl": "stl"}.get(
                arm, "partition"), "seed": s, "learning_rate": lr,
            "width": 8, "groups": [[NAMES[t] for t in g]],
            "network_param_counts": [100 + 10 * len(g)],
            "network_flops": [1000.0],
            "val": _split({t: VAL[g][t][i] - bad for t in g}),
            "test": _split({t: TEST[g][t][i] - bad for t in g}),
            **({"role": "grouping"} if arm.startswith("g_") else {}),
            **({"affinity": (Z * (1 + 0.1 * i)).tolist(),
                "affinity_measurements": 30} if arm == "mtl" else {})})
  # STL is one entry of three networks per (seed, lr): regroup its rows.
  stl = [r for r in runs if r["arm"] == "stl"]
  merged = []
  for lr in LRS:
    for s in SEEDS:
      rows = [r for r in stl if r["seed"] == s and r["learning_rate"] == lr]
      merged.append({**rows[0], "groups": [r["groups"][0] for r in rows],
                     "network_param_counts": [110] * 3,
                     "network_flops": [1000.0] * 3,
                     "val": {"per_task": {k: v for r in rows for k, v in
                                          r["val"]["per_task"].items()},
                             "mean": {}},
                     "test": {"per_task": {k: v for r in rows for k, v in
                                           r["test"]["per_task"].items()},
                              "mean": {}}})
  runs = [r for r in runs if r["arm"] != "stl"] + merged
  return {"schema_version": 1, "experiment": "e8", "condition": {},
          "dataset": {"name": "synthetic", "task_names": NAMES,
                      "tasks": [task_types.Binary(n).to_json() for n in NAMES]},
          "selection_metric": "auc",
          "config": {"grouping": {"groups": "all", "param_budgets": [240]},
                     "arm_suffix": ""},
          "runs": runs}


def _rel():
  """[group][t]: mean validation change vs STL in % (grouping.py's score)."""
  out = {}
  for g in GROUPS:
    out[g] = {t: 100 * (VAL[g][t].mean() - VAL[(t,)][t].mean())
              / VAL[(t,)][t].mean() for t in g}
  return out


def _brute(rel, b, cost=None, budget=None):
  best = None
  for k in range(1, b + 1):
    for sel in itertools.combinations(GROUPS, k):
      if budget is not None and sum(cost(g) for g in sel) > budget:
        continue
      if {t for g in sel for t in g} != {0, 1, 2}:
        continue
      value = sum(max(rel[g][t] for g in sel if t in g) for t in range(3))
      if best is None or value > best[0] + 1e-9:
        best = (value, sel)
  return best


def test_grouping_section_matches_a_brute_force():
  summary = report.summarize([_results()])
  (c,) = summary["conditions"]
  gr = c["grouping"]
  assert gr["complete"] and gr["num_trained"] == 7
  assert set(c["arms"]) == {"mtl", "stl"}          # g_* runs are not arms
  rel = _rel()
  for row in gr["by_networks"]:
    value, sel = _brute(rel, row["networks"])
    got = row["exhaustive"]
    assert sorted(map(tuple, got["groups"])) == sorted(
        [tuple(NAMES[t] for t in g) for g in sel])
    np.testing.assert_allclose(got["val"], value, rtol=1e-9)
    # Test Δm per seed: each task from its best chosen group (on validation).
    assign = {t: max((g for g in sel if t in g), key=lambda g: rel[g][t])
              for t in range(3)}
    want = [100 / 3 * sum((TEST[assign[t]][t][i] - TEST[(t,)][t][i])
                          / TEST[(t,)][t][i] for t in range(3))
            for i in range(2)]
    np.testing.assert_allclose(got["delta_m"]["values"], want, rtol=1e-9)
    mtl = [np.mean([TEST[(0, 1, 2)][t][i] for t in range(3)])
           for i in range(2)]
    mine = [np.mean([TEST[assign[t]][t][i] for t in range(3)])
            for i in range(2)]
    np.testing.assert_allclose(got["vs_mtl"]["values"],
                               np.subtract(mine, mtl), rtol=1e-9, atol=1e-12)
  # A parameter budget of 240: groups cost 100 + 10 |g|.
  (bud,) = gr["budgets"]
  value, sel = _brute(rel, 3, cost=lambda g: 100 + 10 * len(g), budget=240)
  assert sorted(map(tuple, bud["exhaustive"]["groups"])) == sorted(
      [tuple(NAMES[t] for t in g) for g in sel])
  assert bud["exhaustive"]["params"] <= 240


def test_pair_and_affinity_estimates_follow_their_definitions():
  gr = report.summarize([_results()])["conditions"][0]["grouping"]
  rel = _rel()
  # TAG's matrix: the mean over the MTL runs at MTL's chosen rate.
  np.testing.assert_allclose(gr["affinity"]["matrix"], Z * 1.05, rtol=1e-9)
  zbar = Z * 1.05
  for row in gr["by_networks"]:
    b = row["networks"]
    # HOA: t's score in g is the mean of its pair scores; singletons 0.
    hoa = {g: {t: (np.mean([rel[tuple(sorted((t, j)))][t] for j in g
                            if j != t]) if len(g) > 1 else 0.0) for t in g}
           for g in GROUPS}
    _, sel = _brute(hoa, b)
    assert sorted(map(tuple, row["pairs"]["groups"])) == sorted(
        [tuple(NAMES[t] for t in g) for g in sel])
    tag = {g: {t: (np.mean([zbar[j, t] for j in g if j != t])
                   if len(g) > 1 else 0.0) for t in g} for g in GROUPS}
    _, sel = _brute(tag, b)
    assert sorted(map(tuple, row["affinity"]["groups"])) == sorted(
        [tuple(NAMES[t] for t in g) for g in sel])
    # Regret: the exhaustive best minus the estimate's true value.
    true = sum(max(rel[g][t] for g in sel if t in g) for t in range(3))
    np.testing.assert_allclose(row["affinity"]["regret"],
                               row["exhaustive"]["val"] - true, atol=1e-9)


def test_many_tasks_report_the_affinity_only(tmp_path):
  # CelebA-40-like: the exact search is out of reach, the matrix is not.
  names = [f"t{k}" for k in range(14)]
  z = np.random.default_rng(0).normal(0, 1e-4, (14, 14))
  runs = [{"arm": "mtl", "mode": "mtl", "seed": s, "learning_rate": 1e-3,
           "width": 8, "groups": [names], "network_param_counts": [100],
           "val": {"per_task": {n: {"auc": 0.7} for n in names}, "mean": {}},
           "test": {"per_task": {n: {"auc": 0.7} for n in names}, "mean": {}},
           "affinity": z.tolist(), "affinity_measurements": 5}
          for s in (0, 1)]
  res = {"schema_version": 1, "experiment": "e8", "condition": {},
         "dataset": {"name": "many", "task_names": names,
                     "tasks": [task_types.Binary(n).to_json() for n in names]},
         "selection_metric": "auc", "config": {"grouping": {"groups": ""}},
         "runs": runs}
  summary = report.write_report([res], str(tmp_path / "rep"))
  gr = summary["conditions"][0]["grouping"]
  assert gr["by_networks"] == [] and "out of reach" in gr["note"]
  np.testing.assert_allclose(gr["affinity"]["matrix"], z, rtol=1e-12)
  assert any(p.endswith("_affinity.png") for p in summary["plots"])
