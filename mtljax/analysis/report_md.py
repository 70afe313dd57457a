"""The markdown of a report: tables of means with CIs, paired comparisons.

Rendering only: `markdown(summary, title)` turns `report.summarize`'s output
into report.md. Nothing here computes a statistic.
"""

from __future__ import annotations

import json
import math
import os

METRIC_NAMES = {"auc": "AUC", "ap": "AP", "acc": "accuracy",
                "loss": "BCE loss"}


def _f(v) -> float:
  return math.nan if v is None else float(v)


def fmt_ci(ci: dict, digits: int = 3, sign: str = "") -> str:
  """`0.912 ± 0.006` (mean ± CI half-width); the mean alone for one seed."""
  m = _f(ci["mean"] if "mean" in ci else ci["mean_diff"])
  lo, hi = _f(ci["lo"]), _f(ci["hi"])
  if math.isnan(m):
    return "—"
  if math.isnan(lo) or math.isnan(hi):
    return f"{m:{sign}.{digits}f}"
  return f"{m:{sign}.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


def _p(p) -> str:
  p = _f(p)
  return "—" if math.isnan(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def _row(cells) -> str:
  return "| " + " | ".join(map(str, cells)) + " |"


def _table(header, rows) -> list[str]:
  return [_row(header), _row(["---"] * len(header)), *map(_row, rows), ""]


def _seeds(arms: dict) -> str:
  n = sorted({a["n_seeds"] for a in arms.values()})
  return str(n[0]) if len(n) == 1 else f"{n[0]}–{n[-1]}"


def markdown(summary: dict, title: str) -> str:
  """The report as markdown: overview, then one section per condition."""
  metric, base = summary["metric"], summary["baseline"]
  name = METRIC_NAMES.get(metric, metric)
  sel = sorted({c["selection_metric"] for c in summary["conditions"]})
  lines = [f"# {title}", "",
           f"Test {name} ({'higher' if summary['higher_is_better'] else 'lower'}"
           f" is better). Each arm's learning rate is chosen from its grid by "
           f"the validation {'/'.join(sel)} averaged over seeds (over tasks "
           "for one MTL model; per task for STL arms, whose tasks are separate "
           f"networks). Cells: mean ± half-width of the "
           f"{summary['confidence']:.0%} t-interval over seeds. Differences "
           f"are paired by seed against `{base}`; Holm p adjusts the per-task "
           "p-values (paired t-test) within a condition; Δp is the mean "
           "relative change in % (positive: better); W/L counts seeds won and "
           "lost. A task's verdict needs Holm p < "
           f"{1 - summary['confidence']:.2g}; the mean's verdict needs its CI "
           "to exclude 0.", ""]
  rows = []
  for c in summary["conditions"]:
    for a, d in c["comparisons"].items():
      m = d["mean"]
      rows.append([c["experiment"], c["label"], f"{a} − {base}",
                   fmt_ci(m, sign="+"), _p(m["p_value"]),
                   fmt_ci(d["delta_p"], 2, "+"),
                   f"{m['wins']}/{m['losses']}", f"**{d['verdict']}**"])
  if rows:
    lines += ["## Overview", ""] + _table(
        ["experiment", "condition", "comparison", f"Δ mean {name}", "p",
         "Δp %", "W/L", "verdict"], rows)
  for sw in summary["sweeps"]:
    lines += [f"Sweep of {sw['experiment']} along `{sw['field']}`: "
              f"{', '.join(f'{v:g}' for v in sw['x'])}.", ""]
  for c in summary["conditions"]:
    lines += _section(c, summary, name)
  if summary.get("plots"):
    lines += ["## Plots", ""] + [f"![{os.path.basename(p)}]({p})"
                                  for p in summary["plots"]] + [""]
  return "\n".join(lines)


def _section(c: dict, summary: dict, name: str) -> list[str]:
  tasks, base = c["task_names"], summary["baseline"]
  cond = json.dumps(c["condition"]) if c["condition"] else "{}"
  lines = [f"## {c['experiment']} — {c['label']}", "",
           f"dataset `{c['dataset']}` · condition `{cond}` · seeds: "
           f"{_seeds(c['arms'])} · sources: "
           + ", ".join(f"`{s}`" for s in c["sources"]), ""]
  lines += [f"> note: {n}" for n in c["notes"]] + ([""] if c["notes"] else [])
  rows = []
  for a, d in c["arms"].items():
    lrs = [d["lr"]["chosen"][t] for t in tasks]
    lr = (f"{lrs[0]:g}" if len(set(lrs)) == 1
          else "per task: " + ", ".join(f"{v:g}" for v in lrs))
    params = f"{d['param_count']:,}" if d["param_count"] else "—"
    rows.append([f"`{a}`", d["n_seeds"], params, lr]
                + [fmt_ci(d["test"]["per_task"][t]) for t in tasks]
                + [f"**{fmt_ci(d['test']['mean'])}**"])
  lines += [f"Test {name}:", ""] + _table(
      ["arm", "seeds", "params", "lr", *tasks, "mean"], rows)
  for a, d in c["comparisons"].items():
    lines += [f"**`{a}` − `{base}`** (paired by seed, n={d['mean']['n']}): "
              f"Δp = {fmt_ci(d['delta_p'], 2, '+')} %, verdict: "
              f"**{d['verdict']}**", ""]
    both = d.get("tasks", tasks)
    # Tasks that one arm does not learn (config.stl_tasks) have no row.
    rows = [[t, fmt_ci(x, sign="+"), _ci_text(x), _p(x["p_value"]),
             _p(x["p_holm"]), f"{x['wins']}/{x['losses']}", x["verdict"]]
            for t, x in d["per_task"].items() if t in both]
    m = d["mean"]
    label = "**mean**" if len(both) == len(tasks) else (
        f"**mean** ({', '.join(both)})")
    rows.append([label, fmt_ci(m, sign="+"), _ci_text(m),
                 _p(m["p_value"]), "—", f"{m['wins']}/{m['losses']}",
                 d["verdict"]])
    lines += _table(["task", f"Δ {name}", f"{summary['confidence']:.0%} CI",
                     "p", "Holm p", "W/L", "verdict"], rows)
  grids = sorted({v for d in c["arms"].values() for v in d["lr"]["grid"]})
  rows = []
  for a, d in c["arms"].items():
    for unit, scores in d["lr"]["val_score"].items():
      if all(math.isnan(_f(v)) for v in scores.values()):
        continue  # a task this arm does not learn
      best = d["lr"]["chosen"][tasks[0] if unit == "mean" else unit]
      cells = [(f"{_f(scores[f'{g:g}']):.4f}" if f"{g:g}" in scores else "—")
               for g in grids]
      rows.append([f"`{a}`", "all (mean)" if unit == "mean" else unit]
                  + [f"**{x}**" if g == best else x
                     for g, x in zip(grids, cells)])
  lines += [f"Learning-rate selection (validation {c['selection_metric']}, "
            "mean over seeds; chosen in bold):", ""] + _table(
                ["arm", "task", *(f"lr {g:g}" for g in grids)], rows)
  return lines


def _ci_text(d: dict) -> str:
  lo, hi = _f(d["lo"]), _f(d["hi"])
  return "—" if math.isnan(lo) else f"[{lo:+.3f}, {hi:+.3f}]"
