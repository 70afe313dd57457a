"""Writes docs/results/grouping/E8.md from E8's sweep (experiments/e8_grouping.py).

    mtljax sweep --config experiments/e8_grouping.py:quick --workdir w/e8
    python scripts/make_grouping_doc.py w/e8 --out docs/results/grouping

It reads the sweep's report.json (each dataset's grouping section, written
by `mtljax report`), copies the affinity heat maps, and writes one summary
table, a verdict per dataset by the fixed rules below, and each dataset's
grouping tables. Nothing in the document is typed in by hand; rerunning the
commands regenerates it. docs/RESULTS.md includes the summary
(`summary.md`, written next to E8.md) through scripts/make_results_doc.py.

Rules, fixed before any result was seen:
  * "The best grouping beats both all-in-one and all-separate" (claim C8).
    The number of networks b* is the one whose exhaustive selection scores
    best on validation (ties: fewer networks); b* = 1 is MTL itself. The
    claim holds on a dataset when b*'s selection beats MTL (the paired test
    difference of the mean metric, 95% CI above 0) and STL (its test Δm's
    CI above 0). If b* = 1 or b* is STL's own partition, the claim fails
    there. It counts only on datasets whose STL reference is off its floor
    and ceiling (mean primary test metric within [chance + 0.05, 0.98]).
  * An estimate (pairs, TAG) "agrees" with the exhaustive search at b when
    it chooses the same groups; its regret is the exhaustive best's
    validation score minus the true validation score of its choice.
  * The control (mtl_scenes/unrelated): its TAG affinities between tasks
    should be near zero or negative; the document gives the mean
    off-diagonal Z of every dataset side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

from mtljax.analysis import grouping_md  # noqa: E402  pylint: disable=wrong-import-position
from mtljax.analysis import plots  # noqa: E402  pylint: disable=wrong-import-position
from mtljax.analysis.report_md import fmt_ci  # noqa: E402  pylint: disable=wrong-import-position

FLOOR_MARGIN, CEILING = 0.05, 0.98


def _chance(c: dict) -> float:
  out = []
  for t in c["task_names"]:
    tt, m = c["task_types"][t], c["task_metrics"].get(t)
    out.append(0.5 if m == "auc" else 0.0 if m == "r2" else
               0.1 if m == "acc" and tt == "multiclass" else math.nan)
  return float(np.nanmean(out)) if np.isfinite(out).any() else math.nan


def _groups(sel) -> str:
  return "—" if not sel else " · ".join(
      "{" + ", ".join(g) + "}" for g in sel["groups"])


def _above(ci) -> bool:
  return bool(ci) and ci.get("lo") is not None and ci["lo"] > 0


def _facts(c: dict) -> dict:
  gr = c["grouping"]
  t = len(gr["tasks"])
  rows = gr["by_networks"]
  vals = [(r["exhaustive"]["val"] if r.get("exhaustive") else None)
          for r in rows]
  finite = [(v, i) for i, v in enumerate(vals) if v is not None]
  best = max(finite, key=lambda p: (round(p[0], 9), -p[1]))[1] if finite else 0
  sel = rows[best]["exhaustive"]
  stl_mean = c["arms"].get("stl", {}).get("test", {}).get("mean", {}).get(
      "mean")
  chance = _chance(c)
  off = (stl_mean is not None and np.isfinite(chance)
         and chance + FLOOR_MARGIN <= stl_mean <= CEILING)
  is_stl = sel and sorted(map(tuple, sel["groups"])) == sorted(
      (n,) for n in gr["tasks"])
  beats = (best > 0 and not is_stl and _above(sel.get("vs_mtl"))
           and _above(sel.get("delta_m")))
  agree = {m: sum(1 for r in rows if r.get(m) and r.get("exhaustive")
                  and r[m]["groups"] == r["exhaustive"]["groups"])
           for m in ("pairs", "affinity") if m in gr["methods"]}
  aff = gr.get("affinity")
  off_z = None
  if aff:
    z = np.asarray([[math.nan if v is None else v for v in row]
                    for row in aff["matrix"]], float)
    off_z = float(np.nanmean(z[~np.eye(t, dtype=bool)]))
  return {"name": c["dataset"], "t": t, "b": best + 1, "sel": sel,
          "mtl": rows[0]["exhaustive"], "off": off, "stl_mean": stl_mean,
          "chance": chance, "beats": beats, "agree": agree, "rows": len(rows),
          "off_z": off_z, "complete": gr["complete"],
          "trained": gr["num_trained"], "groups": gr["num_groups"]}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("sweep")
  p.add_argument("--out", default="docs/results/grouping")
  a = p.parse_args()
  os.makedirs(a.out, exist_ok=True)
  summary = json.load(open(os.path.join(a.sweep, "report.json")))
  # Conditions with a search (T <= analysis.grouping.MAX_SEARCH_TASKS).
  conds = [c for c in summary["conditions"]
           if c.get("grouping") and c["grouping"]["by_networks"]]
  # E8's dataset order (experiments/e8_grouping.py), others after.
  order = ("mtl_scenes", "mtl_scenes/unrelated", "mtl_scenes/attributes",
           "digits_multilabel", "multi_mnist")
  conds.sort(key=lambda c: (order.index(c["dataset"]) if c["dataset"] in
                            order else len(order), c["dataset"]))
  facts = [_facts(c) for c in conds]
  cfg = json.load(open(os.path.join(conds[0]["sources"][0])))["config"]
  setup = (f"{cfg['num_seeds']} seeds, {cfg['train']['steps']} steps of batch "
           f"{cfg['train']['batch_size']}, {cfg['model']['encoder'].upper()} "
           f"width {cfg['model']['width']}, learning rates "
           f"{', '.join(f'{x:g}' for x in cfg['optimizer']['learning_rates'])}"
           f" (each network picks its own on validation), loss "
           f"{cfg['loss']['normalize']}, TAG every "
           f"{cfg['grouping']['affinity_every']} steps")
  head = ["| dataset | T | groups trained | MTL (b=1): test Δm % vs STL | "
          "best b* (val) | its groups | test Δm % vs STL | test Δ vs MTL | "
          "C8 | pairs agree | TAG agree | mean off-diag. Z ×1e4 |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
          "| --- |"]
  for f in facts:
    verdict = ("**holds**" if f["beats"] else "fails") if f["off"] else (
        "inconclusive (STL at floor or ceiling)")
    head.append(
        f"| {f['name']} | {f['t']} | {f['trained']}/{f['groups']} | "
        f"{fmt_ci(f['mtl'].get('delta_m'), 2, '+') if f['mtl'] else '—'} | "
        f"{f['b']} | {_groups(f['sel'])} | "
        f"{fmt_ci(f['sel'].get('delta_m'), 2, '+') if f['sel'] and f['sel'].get('delta_m') else '—'} | "
        f"{fmt_ci(f['sel'].get('vs_mtl'), 3, '+') if f['sel'] and f['sel'].get('vs_mtl') else '—'} | "
        f"{verdict} | "
        + " | ".join(f"{f['agree'][m]}/{f['rows']}" if m in f["agree"]
                     else "—" for m in ("pairs", "affinity"))
        + " | " + ("—" if f["off_z"] is None else f"{1e4 * f['off_z']:+.2f}")
        + " |")
  summary_md = [
      f"E8 ({setup}; `python scripts/make_grouping_doc.py`, details in "
      "[docs/results/grouping/E8.md](results/grouping/E8.md)). b* is the "
      "number of networks whose exhaustive selection scores best on "
      "validation; C8 is \"the best grouping beats both all-in-one and "
      "all-separate\": b*'s selection beats MTL (test mean, paired) and STL "
      "(test Δm), both 95% CIs above 0. Where only the pairs were trained "
      "(T = 10), 'exhaustive' searches those groups only. \"agree\": in how "
      "many of b = 1..T an estimate chose the exhaustive search's groups.",
      "", *head, ""]
  with open(os.path.join(a.out, "summary.md"), "w") as fh:
    fh.write("\n".join(summary_md))
  doc = ["# E8: which tasks should be learned together", "",
         "Generated by `python scripts/make_grouping_doc.py " + a.sweep
         + "` from `mtljax sweep --config experiments/e8_grouping.py:quick`; "
         "do not edit by hand. The rules are in the script's docstring and "
         "were fixed before any result was seen. Machine and versions: the "
         "`env` of each point's results.json.", "",
         "## Summary", "", summary_md[0].replace(
             "details in [docs/results/grouping/E8.md](results/grouping/E8.md)",
             "details below"), *summary_md[1:]]
  for c, f in zip(conds, facts):
    doc += [f"## {c['dataset']}", "",
            f"STL's mean test {'/'.join(sorted(set(c['task_metrics'].values())))}: "
            + (f"{f['stl_mean']:.3f}" if f["stl_mean"] is not None else "—")
            + f" (chance {f['chance']:.2f}): "
            + ("off its floor and ceiling." if f["off"] else
               "**at its floor or ceiling: no verdict.**"), ""]
    doc += grouping_md.lines(c)[2:]  # without its own heading
    name = plots._slug(c["experiment"], c["label"], "affinity") + ".png"  # pylint: disable=protected-access
    if os.path.join("plots", name) in summary.get("plots", []):
      # Named by dataset here: one file per dataset, whatever the label.
      dst = "e8_affinity_" + c["dataset"].replace("/", "_") + ".png"
      shutil.copyfile(os.path.join(a.sweep, "plots", name),
                      os.path.join(a.out, dst))
      doc += [f"![{dst}]({dst})", ""]
  bench = os.path.join(_REPO, "docs", "bench", "bench_cpu_grouping.json")
  if os.path.exists(bench):
    b = json.load(open(bench))
    e, g = b["end_to_end"], b["tag"]
    doc += ["## Cost", "",
            f"From `python scripts/bench_grouping.py` on {b['machine']['cpu']} "
            f"({b['machine']['cores']} cores): the {e['groups']} groups of 4 "
            f"tasks × {e['seeds']} seeds ({e['runs']} runs, {e['steps']} "
            f"steps) take {e['one_program_median_s']:.0f} s as one `mtljax "
            f"train` and {e['separate_median_s']:.0f} s as {e['groups']} "
            f"separate ones: **{e['speedup']:.1f}×** faster. TAG's "
            f"measurement costs {g['measurement_over_step']:.1f} steps, so a "
            f"measurement every 10 steps slows the MTL run by "
            f"×{g['slowdown_every_10']:.2f} (goal ≤ 2×).", ""]
  # The raw record beside the document: the sweep's report (every condition's
  # grouping section, arms and comparisons, as JSON and markdown).
  shutil.copyfile(os.path.join(a.sweep, "report.json"),
                  os.path.join(a.out, "sweep_report.json"))
  with open(os.path.join(a.sweep, "report.md")) as fh:
    # Its plots stay in the sweep directory: no image links that would break.
    md = [l for l in fh.read().splitlines() if not l.startswith("![")]
  with open(os.path.join(a.out, "sweep_report.md"), "w") as fh:
    fh.write("\n".join(md) + "\n")
  doc += ["The sweep's full report (arms, comparisons, learning rates) is "
          "copied to `sweep_report.md` and `sweep_report.json` here.", ""]
  with open(os.path.join(a.out, "E8.md"), "w") as fh:
    fh.write("\n".join(doc))
  print(f"wrote {os.path.join(a.out, 'E8.md')}")


if __name__ == "__main__":
  main()
