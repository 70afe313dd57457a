"""PNG charts for reports: metric vs a sweep field, paired differences, bars.

Every function draws one figure, saves it as a PNG and returns the path. A
series is (mean, lo, hi): sequences of equal length, where lo/hi bound the CI
and may be NaN (one seed: no interval is drawn)::

    line_with_ci([1, 4, 16], {"mtl": (m, lo, hi), "stl": (m2, lo2, hi2)},
                 "auc_vs_width.png", xlabel="model.width", ylabel="test AUC")
    diff_vs_field([1, 4, 16], {"mtl − stl": (d, lo, hi)}, "diff.png", ...)
    per_task_bars(["car", "person", "mean"], {"mtl": (m, lo, hi)}, "bars.png")
    paths = report_plots(summary, out_dir)   # every chart of a report

The "Agg" backend is selected before pyplot is imported: report machines have
no display, and an interactive backend would fail or open windows.
"""

from __future__ import annotations

import os
import re
import textwrap
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

# pylint: disable=g-import-not-at-top,wrong-import-position
import matplotlib.pyplot as plt
import numpy as np

from mtljax.analysis.report_md import summary_label
from mtljax.analysis.report_md import task_labels
# pylint: enable=g-import-not-at-top,wrong-import-position

Series = tuple[Sequence[float], Sequence[float], Sequence[float]]

# A fixed, colour-blind-friendly cycle so an arm keeps its colour across the
# charts of one report (callers pass arms in the same order everywhere).
_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
           "#F0E442", "#000000")


def _arrays(series: Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  mean, lo, hi = (np.asarray([np.nan if v is None else v for v in s],
                             dtype=np.float64) for s in series)
  if not mean.shape == lo.shape == hi.shape:
    raise ValueError(f"series parts differ in length: {mean.shape}, "
                     f"{lo.shape}, {hi.shape}")
  return mean, lo, hi


def auto_logx(x: Sequence[float]) -> bool:
  """A log x axis when every x is positive and the range spans > 10×."""
  x = np.asarray(x, dtype=np.float64)
  return bool(x.size and np.all(x > 0) and x.max() / x.min() > 10)


def wrap(fig, title: str, fontsize: float) -> str:
  """`title` broken into lines that fit the figure's width (matplotlib
  does not wrap; a long condition label would run off both edges)."""
  per_line = max(20, int(fig.get_figwidth() * 72 / (0.6 * fontsize)))
  return textwrap.fill(title, per_line)


def _save(fig, path: str, rect=None) -> str:
  fig.tight_layout(**({"rect": rect} if rect else {}))
  fig.savefig(path, dpi=110)
  plt.close(fig)  # Reports draw many figures; open ones would pile up memory.
  return path


def _color(colors: Mapping[str, str] | None, name: str, i: int) -> str:
  return (colors or {}).get(name) or _COLORS[i % len(_COLORS)]


def _lines(ax, x, series: Mapping[str, Series], colors) -> None:
  for i, (name, s) in enumerate(series.items()):
    mean, lo, hi = _arrays(s)
    if mean.shape != x.shape:
      raise ValueError(f"series {name!r} has {mean.size} points for "
                       f"{x.size} x values")
    c = _color(colors, name, i)
    ax.plot(x, mean, marker="o", color=c, label=name)
    ok = ~(np.isnan(lo) | np.isnan(hi))
    if ok.any():
      ax.fill_between(x, lo, hi, where=ok, color=c, alpha=0.2, linewidth=0,
                      interpolate=False)


def _xaxis(ax, x: np.ndarray, logx: bool | None) -> None:
  if logx is None:
    logx = auto_logx(x)
  if logx:
    ax.set_xscale("log")
  # Tick exactly at the swept values: they are few and meaningful.
  ax.set_xticks(x)
  ax.set_xticklabels([f"{v:g}" for v in x])
  ax.minorticks_off()


def line_with_ci(x: Sequence[float], series: Mapping[str, Series], path: str,
                 *, xlabel: str, ylabel: str, title: str = "",
                 logx: bool | None = None,
                 colors: Mapping[str, str] | None = None) -> str:
  """One line per series against x, with a shaded CI band.

  Args:
    x: the swept values (e.g. widths), ascending.
    series: name -> (mean, lo, hi), each of len(x).
    path: output PNG path.
    xlabel: x axis label (the swept field).
    ylabel: y axis label (the metric, e.g. "test mean AUC").
    title: figure title; put the number of seeds here.
    logx: log x axis; None: automatic (`auto_logx`).
    colors: optional series name -> colour (default: a fixed cycle).

  Returns:
    path.
  """
  x = np.asarray(x, dtype=np.float64)
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  return _finish_lines(fig, ax, x, series, path, xlabel=xlabel, ylabel=ylabel,
                       title=title, logx=logx, colors=colors)


def _finish_lines(fig, ax, x, series, path, *, xlabel, ylabel, title, logx,
                  colors) -> str:
  """Draws the CI-band series on `ax`, labels the axes and saves the figure."""
  _lines(ax, x, series, colors)
  _xaxis(ax, x, logx)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(wrap(fig, title, 10), fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend()
  return _save(fig, path)


def diff_vs_field(x: Sequence[float], series: Mapping[str, Series], path: str,
                  *, xlabel: str, ylabel: str, title: str = "",
                  logx: bool | None = None,
                  colors: Mapping[str, str] | None = None) -> str:
  """Paired differences (e.g. MTL − STL) against x with CI bands and y = 0.

  Args:
    x: the swept values, ascending.
    series: comparison name (e.g. "mtl − stl") -> (mean diff, lo, hi).
    path: output PNG path.
    xlabel: x axis label.
    ylabel: y axis label, e.g. "Δ test mean AUC (mtl − stl)".
    title: figure title.
    logx: log x axis; None: automatic.
    colors: optional series name -> colour.

  Returns:
    path.
  """
  x = np.asarray(x, dtype=np.float64)
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  # The zero line is the question being asked: where does the band cross it?
  ax.axhline(0.0, color="0.3", linewidth=1, linestyle="--",
             label="no difference")
  return _finish_lines(fig, ax, x, series, path, xlabel=xlabel, ylabel=ylabel,
                       title=title, logx=logx, colors=colors)


# The range a task metric's values lie in: CIs (t-intervals, which know
# nothing of it) are clipped to it where drawn.
METRIC_BOUNDS = {"auc": (0.0, 1.0), "ap": (0.0, 1.0), "acc": (0.0, 1.0),
                 "accuracy": (0.0, 1.0), "r2": (-np.inf, 1.0)}


def bounds_of(metrics: Sequence[str]) -> tuple[float, float]:
  """The range shared by values of these metrics (a mean over tasks lies
  in the union of theirs)."""
  b = [METRIC_BOUNDS.get(m, (-np.inf, np.inf)) for m in metrics]
  if not b:
    return (-np.inf, np.inf)
  return (min(lo for lo, _ in b), max(hi for _, hi in b))


def per_task_bars(groups: Sequence[str], series: Mapping[str, Series],
                  path: str, *, ylabel: str = "", title: str = "",
                  ylim: tuple[float, float] | None = None,
                  colors: Mapping[str, str] | None = None,
                  bounds: Sequence[tuple[float, float]] | None = None) -> str:
  """Per task (and the mean), one dot per arm with its CI as an error bar.

  Dots, not bars: the axis is zoomed to the data (AUCs near 0.9 differ by
  0.01), and a bar's length from a zoomed baseline would exaggerate the
  differences; a dot's position does not.

  Args:
    groups: group labels, e.g. task names followed by "mean".
    series: arm -> (mean, lo, hi), each of len(groups); CI as error bars.
    path: output PNG path.
    ylabel: y axis label (the metric).
    title: figure title.
    ylim: y limits; None: zoom to the data (AUCs near 0.9 differ by 0.01, which
      bars from 0 would hide) with a little margin.
    colors: optional arm -> colour.
    bounds: optional (low, high) per group, the metric's range: each error
      bar is clipped to it (a t-interval of AUCs can pass 1.0).

  Returns:
    path.
  """
  k = max(len(series), 1)
  pos = np.arange(len(groups), dtype=np.float64)
  width = 0.8 / k
  # Wider with more groups and arms, up to a page's width (E6's 11 groups ×
  # 4 arms would otherwise make a 26-inch strip).
  fig, ax = plt.subplots(figsize=(min(16.0, max(
      5.0, 1.1 * len(groups) * max(k, 2) / 2 + 2)), 4.6))
  lows, highs = [], []
  for i, (name, s) in enumerate(series.items()):
    mean, lo, hi = _arrays(s)
    if mean.size != len(groups):
      raise ValueError(f"series {name!r} has {mean.size} bars for "
                       f"{len(groups)} groups")
    if bounds is not None:
      b = np.asarray(bounds, np.float64).reshape(len(groups), 2)
      lo, hi = np.clip(lo, b[:, 0], b[:, 1]), np.clip(hi, b[:, 0], b[:, 1])
    # Error bars only where the interval exists (n ≥ 2 seeds).
    err = np.stack([np.where(np.isnan(lo), 0.0, mean - lo),
                    np.where(np.isnan(hi), 0.0, hi - mean)])
    err = np.where(np.isnan(err), 0.0, err)
    ax.errorbar(pos - 0.4 + width * (i + 0.5), mean, yerr=err, fmt="o",
                capsize=3, markersize=6, color=_color(colors, name, i),
                label=name)
    lows.append(np.where(np.isnan(lo), mean, lo))
    highs.append(np.where(np.isnan(hi), mean, hi))
  finite = np.concatenate(lows + highs + [np.zeros(0)])
  finite = finite[np.isfinite(finite)]
  if ylim is None and finite.size:
    pad = max(0.1 * float(np.ptp(finite)), 0.01)
    ylim = (float(finite.min()) - pad, float(finite.max()) + pad)
  if ylim is not None:
    ax.set_ylim(*ylim)
  ax.set_xticks(pos)
  ax.set_xticklabels(groups, rotation=20 if len(groups) > 6 else 0)
  ax.set_ylabel(ylabel)
  ax.set_title(wrap(fig, title, 10), fontsize=10)
  ax.grid(axis="y", alpha=0.3)
  ax.legend()
  return _save(fig, path)


def _slug(*parts: str) -> str:
  return re.sub(r"[^A-Za-z0-9.=+-]+", "_", "_".join(parts)).strip("_")[:120]


def _n_seeds(conds: Sequence[dict]) -> str:
  n = sorted({a["n_seeds"] for c in conds for a in c["arms"].values()})
  return f"n={n[0]} seeds" if len(n) == 1 else f"n={n[0]}–{n[-1]} seeds"


def _ci_series(cis: Sequence[dict]) -> Series:
  return tuple([np.nan if d.get(k) is None else d[k] for d in cis]
               for k in ("mean", "lo", "hi"))


def report_plots(summary: dict, out_dir: str, max_pngs: int = 40,
                 max_bars_per_experiment: int = 6) -> list[str]:
  """All charts of a `report.summarize` summary, as PNGs in out_dir/plots.

  For each sweep (conditions along one numeric field): the mean test metric
  per arm vs the field, and the paired differences vs the field. For each
  condition (only the first and last of an experiment with more than
  `max_bars_per_experiment`): a per-task bar chart. At most `max_pngs` files.

  Returns:
    PNG paths relative to out_dir.
  """
  os.makedirs(os.path.join(out_dir, "plots"), exist_ok=True)
  metric, base = summary["metric"], summary["baseline"]
  name = summary_label(summary)
  conds = summary["conditions"]
  arm_names = dict.fromkeys(a for c in conds for a in c["arms"])
  colors = {a: _COLORS[i % len(_COLORS)] for i, a in enumerate(arm_names)}
  # A comparison "a − base" is drawn in arm a's colour.
  colors.update({f"{a} − {base}": c for a, c in colors.items()})
  jobs = []
  for sw in summary["sweeps"]:
    block = [conds[i] for i in sw["conditions"]]
    # Over the tasks every arm learns, when an arm learns only some.
    over = f" over {', '.join(sw['tasks'])}" if sw.get("tasks") else ""
    title = f"{sw['experiment']}: test mean {name}{over} ({_n_seeds(block)})"
    arms = {a: (v["mean"], v["lo"], v["hi"]) for a, v in sw["arms"].items()}
    kw = dict(xlabel=sw["field"], colors=colors)  # log x: auto_logx
    stem = _slug(sw["experiment"], metric, "vs", sw["field"].split(" ")[0])
    jobs.append((line_with_ci, (sw["x"], arms), f"{stem}.png",
                 dict(kw, ylabel=f"test mean {name}{over}", title=title)))
    if sw["diffs"]:
      diffs = {f"{a} − {base}": (v["mean"], v["lo"], v["hi"])
               for a, v in sw["diffs"].items()}
      jobs.append((diff_vs_field, (sw["x"], diffs), f"{stem}_diff.png",
                   dict(kw, ylabel=f"Δ test mean {name} (paired by seed)"
                        + ("" if summary["higher_is_better"]
                           else "; < 0: better"),
                        title=f"{sw['experiment']}: paired difference vs "
                        f"{base} ({_n_seeds(block)})")))
  by_exp: dict[str, list] = {}
  for c in conds:
    by_exp.setdefault(c["experiment"], []).append(c)
  for exp, cs in by_exp.items():
    if len(cs) > max_bars_per_experiment:
      cs = [cs[0], cs[-1]]
    for c in cs:
      if not c["arms"]:
        continue  # only the grouping search's networks: its own plot
      tasks = list(c["task_metrics"])  # the reported tasks
      labels = task_labels(c)  # {task: metric} when the tasks' metrics differ
      # Like with like: when some arm learns fewer tasks, the mean is over
      # the tasks every arm learns ("mean_shared").
      shared = c.get("shared_tasks") or tasks
      key = "mean" if len(shared) == len(tasks) else "mean_shared"
      series = {a: _ci_series([d["test"]["per_task"][t] for t in tasks]
                              + [d["test"][key]])
                for a, d in c["arms"].items()}
      mean_label = ("mean" if key == "mean" else
                    "mean over\n" + ", ".join(shared))
      groups = ([f"{t}\n({labels[t]})" for t in tasks] if labels
                else tasks) + [mean_label]
      tm = c["task_metrics"]
      bounds = [bounds_of([tm[t]]) for t in tasks] + [
          bounds_of([tm[t] for t in shared])]
      jobs.append((per_task_bars, (groups, series),
                   _slug(exp, c["label"], metric, "per_task") + ".png",
                   dict(colors=colors, ylabel=f"test {name}", bounds=bounds,
                        title=f"{exp} — {c['label']}: test {name} per task "
                        f"({_n_seeds([c])}; 95% CIs within the metric's "
                        "range)")))
  from mtljax.analysis import curves as curves_lib  # pylint: disable=g-import-not-at-top
  from mtljax.analysis import grouping_md  # pylint: disable=g-import-not-at-top
  for c in conds:
    curves = curves_lib.load_curves(c)
    if curves:
      jobs.append((curves_lib.plot_curves, (c, curves), _slug(
          c["experiment"], c["label"], "curves") + ".png",
                   {"colors": colors}))
    if (c.get("grouping") or {}).get("affinity"):
      jobs.append((grouping_md.heatmap, (c,), _slug(
          c["experiment"], c["label"], "affinity") + ".png", {}))
  paths, used = [], set()
  for fn, args, fname, kw in jobs[:max_pngs]:
    stem, k = fname[:-4], 1
    while fname in used:  # two labels can slug to one name
      k += 1
      fname = f"{stem}_{k}.png"
    used.add(fname)
    if fn(*args, os.path.join(out_dir, "plots", fname), **kw) is None:
      continue  # nothing to draw
    paths.append(os.path.join("plots", fname))
  return paths


OUTCOME_COLORS = {"favours": "#1b9e77", "against": "#d95f02",
                  "equivalent": "#7570b3", "inconclusive": "#999999"}


def forest(verdict: dict, path: str) -> str | None:
  """One claim's comparisons as a forest plot: each paired difference's
  mean and 95% CI (> 0 favours the claim), coloured by its outcome, with its
  equivalence margin as a grey band. None if it has no comparison.

  Args:
    verdict: an entry of verdicts.json (`rules.combine`'s output).
    path: the PNG to write.
  """
  rows = [j for j in verdict.get("comparisons", [])
          if j.get("mean") is not None and np.isfinite(j["mean"])]
  if not rows:
    return None
  fig, ax = plt.subplots(figsize=(8.5, 1.6 + 0.32 * len(rows)))
  for i, j in enumerate(reversed(rows)):
    m = j.get("margin")
    if m is not None and np.isfinite(m):
      ax.fill_betweenx([i - 0.35, i + 0.35], -m, m, color="0.88",
                       linewidth=0)
    lo, hi = j.get("lo"), j.get("hi")
    err = None
    if lo is not None and hi is not None and np.isfinite(lo):
      err = [[j["mean"] - lo], [hi - j["mean"]]]
    ax.errorbar([j["mean"]], [i], xerr=err, fmt="o", capsize=3,
                color=OUTCOME_COLORS.get(j["outcome"], "k"))
  ax.axvline(0, color="k", linewidth=0.8)
  ax.set_yticks(range(len(rows)))
  ax.set_yticklabels([textwrap.shorten(j["name"], 70)
                      for j in reversed(rows)], fontsize=7)
  ax.set_xlabel("paired difference (> 0 favours the claim), 95% CI; "
                "grey: equivalence margin", fontsize=8)
  handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=o)
             for o, c in OUTCOME_COLORS.items()
             if any(j["outcome"] == o for j in rows)]
  ax.legend(handles=handles, fontsize=7, loc="best")
  # A figure title: the axes sit right of the long labels, so an axes
  # title centred on them would run off the figure.
  title = wrap(fig, f"{verdict['claim']}: {verdict['verdict']}", 9)
  fig.suptitle(title, fontsize=9)
  ax.grid(axis="x", alpha=0.3)
  lines = title.count("\n") + 1  # ~0.17 in per line of 9 pt, + padding
  top = 1 - (0.15 + 0.17 * lines) / fig.get_figheight()
  return _save(fig, path, rect=(0, 0, 1, top))
