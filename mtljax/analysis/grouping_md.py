"""The grouping section as markdown, and the affinity heat map.

`lines(c, summary)` renders a condition's "grouping" entry (grouping.py):
the partitions chosen by each method for b = 1..T networks with their test
comparisons, the budgets in parameters and FLOPs, TAG's affinity matrix
(tasks in clustered order) and the cost of each method. `heatmap` draws the
matrix; report.write_report adds it to the plots.
"""

from __future__ import annotations

import math

import numpy as np

from mtljax.analysis.report_md import _f, _table, fmt_ci

_NAMES = {"exhaustive": "exhaustive (trained groups)",
          "pairs": "pairs (HOA)", "affinity": "TAG affinity"}


def _scale(z: np.ndarray) -> int:
  """k such that the largest off-diagonal |Z| × 10^k lies in [1, 10)."""
  off = np.abs(z[~np.eye(len(z), dtype=bool)])
  off = off[np.isfinite(off) & (off > 0)]
  return 0 if not off.size else int(-math.floor(math.log10(off.max())))


def _groups(sel: dict) -> str:
  return " · ".join("{" + ", ".join(g) + "}" for g in sel["groups"])


def _cell(sel: dict | None, num_tasks: int) -> list[str]:
  if sel is None:
    return ["—", "—", "—", "—"]
  val = _f(sel["val"]) / num_tasks
  regret = _f(sel["regret"]) / num_tasks
  return [_groups(sel), "—" if math.isnan(val) else f"{val:+.2f}",
          "—" if math.isnan(regret) else f"{regret:.2f}",
          fmt_ci(sel["delta_m"], 2, "+") if sel.get("delta_m") else
          "not trained"]


def lines(c: dict) -> list[str]:
  """The markdown of condition c's grouping section ([] if it has none)."""
  gr = c.get("grouping")
  if not gr:
    return []
  t = len(gr["tasks"])
  out = ["### Grouping search", "",
         f"{gr['num_trained']} of the {gr['num_groups']} task groups "
         "trained" + (" (every group: the search is exhaustive)"
                      if gr["complete"] else
                      " (not all: 'exhaustive' searches the trained groups "
                      "only, and estimates are checked where they can be)")
         + f"; {len(gr['seeds'])} seeds. A group's score for task t is t's "
         "validation change against its single-task network, in %; a "
         "selection's score is their mean over tasks (Δm on validation), "
         "each task in its best chosen group (groups may overlap). "
         "Regret: the best score for that many networks minus the "
         "selection's true score. Test Δm: % against STL, paired by seed.",
         ""]
  if gr.get("note"):
    out += [f"> note: {gr['note']}", ""]
  rows = []
  for r in gr["by_networks"]:
    for m in gr["methods"]:
      sel = r.get(m) or {}
      rows.append([str(r["networks"]), _NAMES[m], *_cell(r.get(m), t),
                   fmt_ci(sel["vs_mtl"], 3, "+") if sel.get("vs_mtl") else "—",
                   fmt_ci(sel["test_mean"]) if sel.get("test_mean") else "—"])
  if rows:
    out += _table(["networks", "method", "groups", "val score %", "regret",
                   "test Δm % vs STL", "test Δ mean vs MTL", "test mean"],
                  rows)
  if gr["budgets"]:
    rows = [[b["kind"], f"{b['budget']:,.0f}",
             *(_cell(b["exhaustive"], t)[:2] + [
                 fmt_ci(b["exhaustive"]["delta_m"], 2, "+")
                 if b["exhaustive"] and b["exhaustive"].get("delta_m")
                 else "—"])] for b in gr["budgets"]]
    out += ["Best selection within a budget (exhaustive, total parameters "
            "or forward FLOPs per example of its networks):", ""]
    out += _table(["budget", "at most", "groups", "val score %",
                   "test Δm % vs STL"], rows)
  aff = gr.get("affinity")
  if aff:
    order = aff["order"]
    names = [gr["tasks"][i] for i in order]
    z = np.asarray([[_f(v) for v in row] for row in aff["matrix"]])
    k = _scale(z)
    out += [f"TAG lookahead affinity Z[i→j] × 1e{k} (row i's step on task j's "
            f"loss; > 0 helps), mean over {aff['seeds']} MTL runs at learning "
            f"rate {aff['learning_rate']:g} and {aff['measurements']} "
            "measurements each; tasks in clustered order:", ""]
    out += _table(["i \\ j", *names], [
        [names[a], *(f"{10.0 ** k * z[i, j]:+.2f}" for j in order)]
        for a, i in enumerate(order)])
  cost = gr["cost"]
  out += [f"Cost in networks trained per seed and learning rate: exhaustive "
          f"{cost['exhaustive']}, pairs {cost['pairs']}, TAG "
          f"{cost['affinity']} (the MTL network, with its measurement "
          "overhead: docs/PERFORMANCE.md).", ""]
  return out


def heatmap(c: dict, path: str) -> str | None:
  """Draws condition c's affinity matrix (clustered order) to `path`."""
  from mtljax.analysis import plots  # pylint: disable=g-import-not-at-top
  aff = (c.get("grouping") or {}).get("affinity")
  if not aff:
    return None
  plt = plots.plt
  order = aff["order"]
  names = [c["grouping"]["tasks"][i] for i in order]
  z = np.asarray([[_f(aff["matrix"][i][j]) for j in order] for i in order])
  k = _scale(z)
  z = 10.0 ** k * z
  n = len(names)
  # The colours span the off-diagonal entries, which decide the grouping: a
  # task's step on its own loss (the diagonal, grey) is far larger.
  off = np.where(np.eye(n, dtype=bool), np.nan, z)
  lim = float(np.nanmax(np.abs(off))) if np.isfinite(off).any() else 1.0
  # At least wide enough for the title (T = 2 gives a tiny matrix).
  fig, ax = plt.subplots(figsize=(max(4.8, 1.6 + 0.75 * n),
                                  max(3.6, 1.2 + 0.65 * n)))
  cmap = plt.get_cmap("RdBu").with_extremes(bad="0.85")
  im = ax.imshow(off, cmap=cmap, vmin=-lim, vmax=lim)
  ax.set_xticks(range(n), names, rotation=45, ha="right")
  ax.set_yticks(range(n), names)
  ax.set_xlabel("task j (its loss)")
  ax.set_ylabel("task i (its step)")
  if n <= 12:
    for i in range(n):
      for j in range(n):
        if np.isfinite(z[i, j]):
          ax.text(j, i, f"{z[i, j]:.2f}", ha="center", va="center",
                  fontsize=7, color="white" if i != j and abs(z[i, j])
                  > 0.6 * lim else "black")
  fig.colorbar(im, ax=ax, label=f"Z[i→j] × 1e{k}")
  ax.set_title(f"{c['experiment']}: lookahead affinity, clustered\n"
               f"({c['dataset']}, mean of {aff['seeds']} MTL runs; "
               "diagonal grey)", fontsize=9)
  fig.tight_layout()
  return plots._save(fig, path)  # pylint: disable=protected-access
