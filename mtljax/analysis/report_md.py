"""The markdown of a report: tables of means with CIs, paired comparisons.

Rendering only: `markdown(summary, title)` turns `report.summarize`'s output
into report.md. Nothing here computes a statistic.

A condition whose tasks are all read in one metric has the tables of
all-binary reports ("Test AUC:", a column per task); one whose tasks are read
in different metrics (mixed task types, each in its primary metric) names
each task's metric: "a (AUC)" column headers and a "metric" column in the
per-task differences. Δm (against the STL arm) has its own table.
"""

from __future__ import annotations

import json
import math
import os

from mtljax import registry

METRIC_NAMES = {"auc": "AUC", "ap": "AP", "acc": "accuracy",
                "loss": "BCE loss", "top5": "top-5 accuracy",
                "macro_f1": "macro-F1", "r2": "R²", "mse": "MSE", "mae": "MAE",
                "primary": "primary metric"}
# "loss" is the task type's own loss.
_LOSS_NAMES = {"binary": "BCE loss", "multiclass": "CE loss"}


def metric_label(metric: str, types=("binary",)) -> str:
  """A metric's name for tasks of `types` (e.g. "AUC"; "loss": its kind)."""
  if metric == "loss":
    names = {_LOSS_NAMES.get(t, "loss") for t in types}
    return names.pop() if len(names) == 1 else "loss"
  return METRIC_NAMES.get(metric, metric)


def summary_label(summary: dict) -> str:
  """The summary's metric, named for the tasks it is reported on."""
  types = {c["task_types"][t] for c in summary["conditions"]
           for t in c["task_metrics"]}
  return metric_label(summary["metric"], types or ("binary",))


def task_labels(c: dict) -> dict | None:
  """{task: its metric's name} when a condition's tasks differ in metric."""
  if len(set(c["task_metrics"].values())) <= 1:
    return None
  return {t: metric_label(m, (c["task_types"][t],))
          for t, m in c["task_metrics"].items()}


def _condition_label(c: dict, summary: dict) -> str:
  """The one metric name of a condition whose tasks share it."""
  ms = set(c["task_metrics"].values())
  if len(ms) != 1:
    return summary_label(summary)
  return metric_label(ms.pop(), {c["task_types"][t] for t in c["task_metrics"]})


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
  if not n:
    return "—"  # no arms (only the grouping search's networks)
  return str(n[0]) if len(n) == 1 else f"{n[0]}–{n[-1]}"


def _sel_label(sel: str) -> str:
  return "primary metric of each task" if sel == "primary" else sel


def _what(summary: dict, name: str) -> str:
  """The report's first words: which test metric, and its direction."""
  if summary["metric"] != "primary":
    return (f"Test {name} "
            f"({'higher' if summary['higher_is_better'] else 'lower'} is "
            "better).")
  types = dict.fromkeys(t for c in summary["conditions"]
                        for t in c["task_types"].values())
  each = ", ".join(
      f"{metric_label(registry.TASK_TYPES.get(t).primary_metric, (t,))} for "
      f"{t}" for t in types)
  return (f"Test metric: each task's primary metric ({each} tasks; all "
          "higher is better); a mean is over the tasks.")


def markdown(summary: dict, title: str) -> str:
  """The report as markdown: overview, then one section per condition."""
  base = summary["baseline"]
  name = summary_label(summary)
  sel = sorted({_sel_label(c["selection_metric"])
                for c in summary["conditions"]})
  lines = [f"# {title}", "",
           f"{_what(summary, name)} Each arm's learning rate is chosen from "
           "its grid by "
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
  if any(c["delta_m"]["arms"] for c in summary["conditions"]):
    lines += ["Δm (Maninis et al., 2019) is the mean over tasks of each task's "
              "relative change in its primary test metric, in % (sign "
              "flipped for a lower-is-better metric; positive: better), "
              "against the real STL run of the same seed (not an untrained "
              "or epoch-0 model).", ""]
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
  all_tasks, base = c["task_names"], summary["baseline"]
  tasks = list(c["task_metrics"])  # the reported tasks
  labels = task_labels(c)
  name = _condition_label(c, summary)
  cond = json.dumps(c["condition"]) if c["condition"] else "{}"
  lines = [f"## {c['experiment']} — {c['label']}", "",
           f"dataset `{c['dataset']}` · condition `{cond}` · seeds: "
           f"{_seeds(c['arms'])} · sources: "
           + ", ".join(f"`{s}`" for s in c["sources"]), ""]
  lines += [f"> note: {n}" for n in c["notes"]] + ([""] if c["notes"] else [])
  rows = []
  for a, d in c["arms"].items():
    lrs = [d["lr"]["chosen"][t] for t in all_tasks]
    lr = (f"{lrs[0]:g}" if len(set(lrs)) == 1
          else "per task: " + ", ".join(f"{v:g}" for v in lrs))
    params = f"{d['param_count']:,}" if d["param_count"] else "—"
    rows.append([f"`{a}`", d["n_seeds"], params, lr]
                + [fmt_ci(d["test"]["per_task"][t]) for t in tasks]
                + [f"**{fmt_ci(d['test']['mean'])}**"])
  if labels:
    heads = [f"{t} ({labels[t]})" for t in tasks]
    title = "Test metrics (each task's own; the mean is over tasks):"
  else:
    heads = tasks
    title = f"Test {name}:"
  if rows:  # none when only the grouping search's networks were trained
    lines += [title, ""] + _table(["arm", "seeds", "params", "lr", *heads,
                                   "mean"], rows)
  for a, d in c["comparisons"].items():
    lines += [f"**`{a}` − `{base}`** (paired by seed, n={d['mean']['n']}): "
              f"Δp = {fmt_ci(d['delta_p'], 2, '+')} %, verdict: "
              f"**{d['verdict']}**", ""]
    both = d.get("tasks", tasks)
    # Tasks that one arm does not learn (config.stl_tasks) have no row.
    metric = (lambda t: [labels[t]]) if labels else (lambda t: [])
    rows = [[t, *metric(t), fmt_ci(x, sign="+"), _ci_text(x),
             _p(x["p_value"]), _p(x["p_holm"]), f"{x['wins']}/{x['losses']}",
             x["verdict"]]
            for t, x in d["per_task"].items() if t in both]
    m = d["mean"]
    label = "**mean**" if len(both) == len(tasks) else (
        f"**mean** ({', '.join(both)})")
    rows.append([label, *(["—"] if labels else []), fmt_ci(m, sign="+"),
                 _ci_text(m), _p(m["p_value"]), "—",
                 f"{m['wins']}/{m['losses']}", d["verdict"]])
    head = ["task", "metric", "Δ"] if labels else ["task", f"Δ {name}"]
    lines += _table([*head, f"{summary['confidence']:.0%} CI",
                     "p", "Holm p", "W/L", "verdict"], rows)
  lines += _delta_m(c, summary)
  from mtljax.analysis import grouping_md  # pylint: disable=g-import-not-at-top
  lines += grouping_md.lines(c)
  grids = sorted({v for d in c["arms"].values() for v in d["lr"]["grid"]})
  rows = []
  for a, d in c["arms"].items():
    for unit, scores in d["lr"]["val_score"].items():
      if all(math.isnan(_f(v)) for v in scores.values()):
        continue  # a task this arm does not learn
      # A unit is "mean" (one MTL network), a task, or a group "a+b".
      first = all_tasks[0] if unit == "mean" else next(
          (t for t in all_tasks if unit == t or unit.startswith(t + "+")),
          unit)
      best = d["lr"]["chosen"][first]
      cells = [(f"{_f(scores[f'{g:g}']):.4f}" if f"{g:g}" in scores else "—")
               for g in grids]
      rows.append([f"`{a}`", "all (mean)" if unit == "mean" else unit]
                  + [f"**{x}**" if g == best else x
                     for g, x in zip(grids, cells)])
  if rows:
    lines += [f"Learning-rate selection (validation "
              f"{_sel_label(c['selection_metric'])}, "
              "mean over seeds; chosen in bold):", ""] + _table(
                  ["arm", "task", *(f"lr {g:g}" for g in grids)], rows)
  return lines


def _delta_m(c: dict, summary: dict) -> list[str]:
  """The Δm table of a condition: each non-STL arm against the STL arm."""
  dm = c["delta_m"]
  if not dm["arms"]:
    return []
  ref = dm["reference"]
  metrics = ", ".join(
      f"{t} {metric_label(m, (c['task_types'][t],))}"
      for t, m in dm["metrics"].items())
  rows, why = [], []
  for a, d in dm["arms"].items():
    rows.append([f"`{a}`", fmt_ci(d, 2, "+"), _ci_text(d, 2), d["n"],
                 ", ".join(d["tasks"]) or "—"])
    why += [f"Δm of `{a}` skips task `{t}`: {r}."
            for t, r in d["skipped"].items()]
  return ([f"Δm vs `{ref}` (%, primary metrics: {metrics}; paired by seed):",
           ""] + _table(["arm", "Δm %", f"{summary['confidence']:.0%} CI",
                         "n", "tasks"], rows)
          + ([" ".join(why), ""] if why else []))


def _ci_text(d: dict, digits: int = 3) -> str:
  lo, hi = _f(d["lo"]), _f(d["hi"])
  return ("—" if math.isnan(lo) or math.isnan(hi)
          else f"[{lo:+.{digits}f}, {hi:+.{digits}f}]")
