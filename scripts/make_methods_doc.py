"""Writes docs/results/methods/E7.md from E7's workdirs (experiments/e7_methods.py).

    mtljax train --config experiments/e7_methods.py:quick,mtl_scenes --workdir w/e7_scenes
    mtljax train --config experiments/e7_methods.py:quick,multi_mnist --workdir w/e7_mnist
    python scripts/make_methods_doc.py w/e7_scenes w/e7_mnist --out docs/results/methods

For each workdir it runs `mtljax report --baseline mtl` (every method paired
by seed with equal weighting, "mtl"; Δm against the STL arm of the same
seeds) and turns report.json into one table per dataset, a Δm plot, and a
verdict computed by fixed rules, stated in the document:

  * a method beats (or loses to) tuned EW on a dataset when its paired
    difference in the mean primary test metric has a Holm-adjusted p < 0.05
    over the methods compared on that dataset (paired t-test over seeds),
    with the sign of the mean difference;
  * a dataset's null result counts only when EW is off its floor (chance:
    AUC 0.5, accuracy 1/K, plus 0.05) and its ceiling (1 - 0.02).

Nothing in the document is typed in by hand; rerunning the commands
regenerates it. results.json and report.md of each workdir are copied next
to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np

FLOOR_MARGIN, CEILING_MARGIN = 0.05, 0.02


def _kind(arm: str, config: dict) -> str:
  if arm == "mtl":
    return "EW"
  if arm.startswith("stl"):
    return "STL"
  for name, fields in config.get("method_arms", []):
    if name == arm:
      return "weighting" if "weighting" in fields else "aggregator"
  return "?"


def _chance(task_types: dict, task_metrics: dict, tasks: list) -> float:
  """The mean primary metric of a constant predictor (the floor)."""
  out = []
  for t in tasks:
    tt, m = task_types.get(t, ""), task_metrics.get(t, "")
    if m == "auc":
      out.append(0.5)
    elif m == "acc" and tt.startswith("multiclass"):
      k = int(tt.split(":")[1]) if ":" in tt else 10
      out.append(1.0 / k)
    elif m == "r2":
      out.append(0.0)
    else:
      out.append(float("nan"))
  return float(np.mean(out))


def _fmt(x, lo=None, hi=None, digits=3, pct=False):
  if x is None or (isinstance(x, float) and not np.isfinite(x)):
    return "—"
  f = f"{{:+.{digits}f}}" if pct else f"{{:.{digits}f}}"
  if lo is None or hi is None:
    return f.format(x)
  return f"{f.format(x)} ± {(hi - lo) / 2:.{digits}f}"


def dataset_section(workdir: str, out_dir: str) -> tuple[str, dict]:
  """Reports one E7 workdir; returns (markdown, facts for the verdict)."""
  import mtljax  # pylint: disable=g-import-not-at-top
  from mtljax.analysis import stats  # pylint: disable=g-import-not-at-top
  rep_dir = os.path.join(workdir, "report_vs_ew")
  summary = mtljax.report([workdir], rep_dir, baseline="mtl")
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  cond = summary["conditions"][0]
  dataset = cond["dataset"]
  name = dataset if isinstance(dataset, str) else dataset.get("name", "?")
  config = results["config"]
  tasks = cond["task_names"]
  task_metrics = cond["task_metrics"]
  task_types = {t["name"]: (t["type"] if t["type"] != "multiclass"
                            else f"multiclass:{t.get('num_classes', 10)}")
                for t in results["dataset"].get("tasks", [])}
  arms = cond["arms"]
  comps = cond["comparisons"]
  delta = cond.get("delta_m", {}).get("arms", {})
  methods = [a for a in arms if a not in ("mtl",) and not a.startswith("stl")]
  pvals = [comps.get(a, {}).get("mean", {}).get("p_value") for a in methods]
  ok = [i for i, p in enumerate(pvals) if p is not None and np.isfinite(p)]
  holm = np.full(len(methods), np.nan)
  if ok:
    holm[ok] = stats.holm([pvals[i] for i in ok])

  def mean_primary(arm):
    # The report's metric: the tasks' common primary (AUC, accuracy).
    v = arms[arm]["test"].get("mean", {})
    return v.get("mean"), v.get("lo"), v.get("hi")

  ew, _, _ = mean_primary("mtl")
  stl, _, _ = mean_primary("stl") if "stl" in arms else (None, None, None)
  floor = _chance(task_types, task_metrics, tasks)
  off = (ew is not None and ew >= floor + FLOOR_MARGIN
         and ew <= 1 - CEILING_MARGIN)
  rows, better, worse = [], [], []
  wl = lambda c: f"{c.get('wins', 0)}/{c.get('losses', 0)}" if c else "—"
  order = ["stl", "mtl"] + methods
  for arm in order:
    if arm not in arms:
      continue
    m, lo, hi = mean_primary(arm)
    lr = arms[arm].get("lr", {}).get("chosen", {})
    lrs = sorted({float(v) for v in lr.values()}) if lr else []
    dm = delta.get(arm, {})
    c = comps.get(arm, {}).get("mean", {}) if arm in methods else {}
    verdict = "—"
    if arm in methods:
      i = methods.index(arm)
      p = holm[i]
      if np.isfinite(p) and p < 0.05:
        verdict = "**better**" if c["mean_diff"] > 0 else "**worse**"
        (better if c["mean_diff"] > 0 else worse).append(arm)
      else:
        verdict = "no difference"
    rows.append(
        f"| `{arm}` | {_kind(arm, config)} | {', '.join(f'{x:g}' for x in lrs)} "
        f"| {_fmt(m, lo, hi)} "
        f"| {_fmt(dm.get('mean'), dm.get('lo'), dm.get('hi'), 2, True) if dm else '—'} "
        f"| {_fmt(c.get('mean_diff'), c.get('lo'), c.get('hi'), 3, True) if c else '—'} "
        f"| {f'{holm[methods.index(arm)]:.3f}' if arm in methods and np.isfinite(holm[methods.index(arm)]) else '—'} "
        f"| {wl(c)} "
        f"| {verdict} |")
  n_seeds = arms["mtl"]["n_seeds"]
  metric_names = ", ".join(f"{t} {task_metrics[t]}" for t in tasks)
  md = [f"### {name}", "",
        f"{len(tasks)} tasks ({metric_names}); {n_seeds} seeds; "
        f"{config['train']['steps']} steps of batch {config['train']['batch_size']}; "
        f"{config['model']['encoder'].upper()} width {config['model']['width']}; "
        f"learning-rate grid {config['optimizer']['learning_rates']} for every arm, "
        "picked on validation. Test metric: the mean over tasks of each task's "
        "primary metric, mean ± half-width of the 95% t-interval over seeds.", "",
        "| arm | kind | lr | test (mean primary) | Δm vs STL % | Δ vs EW (paired) | Holm p | W/L vs EW | vs EW |",
        "|---|---|---|---|---|---|---|---|---|"] + rows + [""]
  md.append(
      f"EW's test score is {ew:.3f} against a floor (chance) of {floor:.3f} and a "
      f"ceiling of 1: {'off both, so a null result here counts' if off else 'NOT off its floor and ceiling, so a null result here tells nothing'}."
      + (f" STL reaches {stl:.3f}." if stl is not None else ""))
  half = [(comps[a]["mean"]["hi"] - comps[a]["mean"]["lo"]) / 2
           for a in methods if comps.get(a, {}).get("mean", {}).get("hi")
           is not None]
  if half:
    md.append(
        f"Resolution: the median 95% CI half-width of a paired difference "
        f"against EW is {float(np.median(half)):.3f}; smaller differences "
        "cannot be told apart at this budget.")
  seeds = arms["mtl"]["test"]["mean"].get("values", [])
  # Descriptive only (not a verdict rule): seeds that barely left chance.
  low = [i for i, v in enumerate(seeds) if v < floor + 2 * FLOOR_MARGIN]
  if low:
    md.append(
        f"EW's seed(s) at index {', '.join(map(str, low))} ended within "
        f"{2 * FLOOR_MARGIN:g} of chance (test {', '.join(f'{seeds[i]:.3f}' for i in low)}): "
        "a run that failed to learn at the chosen rate; it is kept (paired "
        "seeds, no exclusion after the fact) and it widens every interval.")
  md.append("")
  shutil.copy(os.path.join(workdir, "results.json"),
              os.path.join(out_dir, f"{name.replace('/', '_')}_results.json"))
  shutil.copy(os.path.join(rep_dir, "report.md"),
              os.path.join(out_dir, f"{name.replace('/', '_')}_report.md"))
  facts = dict(name=name, better=better, worse=worse, off=off, n=len(methods),
               delta={a: delta.get(a, {}) for a in ["mtl"] + methods},
               kinds={a: _kind(a, config) for a in ["mtl"] + methods})
  return "\n".join(md), facts


def plot(facts: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(facts), figsize=(6 * len(facts), 7),
                           squeeze=False)
  for ax, f in zip(axes[0], facts):
    arms = list(f["delta"])
    vals = [f["delta"][a].get("mean", np.nan) for a in arms]
    err = [(f["delta"][a].get("hi", np.nan) - f["delta"][a].get("lo", np.nan)) / 2
           for a in arms]
    colors = ["black" if a == "mtl" else
              ("tab:blue" if f["kinds"][a] == "weighting" else "tab:orange")
              for a in arms]
    y = np.arange(len(arms))[::-1]
    ax.barh(y, vals, xerr=err, color=colors, alpha=0.8, capsize=3)
    ax.set_yticks(y)
    ax.set_yticklabels(["EW (mtl)" if a == "mtl" else a for a in arms])
    ax.axvline(0, color="gray", lw=1)
    ew = f["delta"]["mtl"].get("mean", np.nan)
    ax.axvline(ew, color="black", lw=1, ls="--")
    ax.set_xlabel("Δm vs STL, % (95% CI over seeds; > 0: better than STL)")
    ax.set_title(f"{f['name']}: black = EW, blue = loss weightings, "
                 "orange = gradient aggregators", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("workdirs", nargs="+")
  p.add_argument("--out", default="docs/results/methods")
  a = p.parse_args()
  os.makedirs(a.out, exist_ok=True)
  sections, facts = [], []
  for w in a.workdirs:
    md, f = dataset_section(w, a.out)
    sections.append(md)
    facts.append(f)
  plot(facts, os.path.join(a.out, "e7_delta_m.png"))
  verdict = []
  for f in facts:
    if f["better"] or f["worse"]:
      verdict.append(
          f"- **{f['name']}**: of {f['n']} methods, better than tuned EW: "
          f"{', '.join(f['better']) or 'none'}; worse: "
          f"{', '.join(f['worse']) or 'none'}; the rest show no difference.")
    else:
      verdict.append(
          f"- **{f['name']}**: none of the {f['n']} methods differs from tuned EW "
          "(Holm p >= 0.05 for each)"
          + ("; EW is off its floor and ceiling, so this null counts."
             if f["off"] else "; but EW is not off its floor and ceiling: "
             "this null tells nothing."))
  doc = ["# E7: MTL methods against tuned equal weighting", "",
         "Generated by `python scripts/make_methods_doc.py` from the workdirs of "
         "`experiments/e7_methods.py` (commands in its docstring and in the "
         "script's); do not edit by hand. Machine and versions: the `env` of "
         "each copied results.json.", "",
         "The question of Xin et al. 2022 and Kurin et al. 2022: does a loss "
         "weighting or a gradient aggregator beat equal weighting (EW) that "
         "gets the same tuning? Every arm trains side by side, paired by seed "
         "(same batches, label masks and initial weights), with the same "
         "learning-rate grid picked on validation, each method at its paper's "
         "default hyperparameters.", "",
         "## Verdict", "",
         "Rule: a method beats (loses to) EW on a dataset when its paired "
         "difference in the mean primary test metric has Holm-adjusted p < "
         "0.05 over the methods on that dataset; a null result counts only "
         "when EW is off its floor and ceiling.", ""] + verdict + [
         "", "![Δm of every method against STL](e7_delta_m.png)", "",
         "## Per dataset", ""] + sections
  with open(os.path.join(a.out, "E7.md"), "w") as f:
    f.write("\n".join(doc) + "\n")
  print(f"wrote {os.path.join(a.out, 'E7.md')}")


if __name__ == "__main__":
  main()
