"""The reproduction of the lecture's claims: the experiments and a verdict table.

    mtljax reproduce                        # quick: minutes on a CPU
    mtljax reproduce --full                 # the study behind docs/RESULTS.md
    mtljax reproduce --full --profile gpu   # the same at one accelerator's scale
    mtljax reproduce --only e7,e8           # the methods and grouping claims

Each experiment's sweep (experiments/e*.py) is run into WORKDIR/<experiment>,
reported there (report.md, report.json, plots/), and then each claim gets a
verdict by study v2's rules (mtljax/study/rules.py, fixed before any v2
result; the comparisons are built in claims.py): "supported", "not
supported", "equivalent", "mixed" or "inconclusive", each with the rule
that decided it. They are written to WORKDIR/VERDICTS.md and verdicts.json
and printed.
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np

from mtljax import config as config_lib
from mtljax.analysis import report as report_lib
from mtljax.study import claims
from mtljax.study import rules
from mtljax.run import sweep as sweep_lib
from mtljax.run import writers

log = logging.getLogger("mtljax")

# The source checkout's experiments/ (an editable install). A wheel holds no
# experiments: then ./experiments, $MTLJAX_EXPERIMENTS or --experiments.
_CHECKOUT_EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), "experiments")


def experiments_dir(path: str | None = None) -> str:
  """Where the study's experiment files are.

  Args:
    path: an explicit directory (`mtljax reproduce --experiments DIR`).

  Returns:
    `path`, else $MTLJAX_EXPERIMENTS, else ./experiments, else the source
    checkout's experiments/ — the first that holds e1_mtl_vs_stl.py.

  Raises:
    ConfigError: none of them does.
  """
  tried = [path] if path else [os.environ.get("MTLJAX_EXPERIMENTS"),
                               os.path.abspath("experiments"),
                               _CHECKOUT_EXPERIMENTS]
  for d in tried:
    if d and os.path.isfile(os.path.join(d, EXPERIMENTS[0][1])):
      return d
  raise config_lib.ConfigError(
      f"no experiments folder with {EXPERIMENTS[0][1]} found (looked in "
      f"{', '.join(d for d in tried if d)}); pass --experiments DIR (the "
      "repository's experiments/)")


# (name, config file, baseline arm of its report). E7 and E8 are long (every
# method; every task group) and run only when named: `--only e7,e8`; their
# claims join the table whenever their results are in the workdir.
EXPERIMENTS = (
    ("e1", "e1_mtl_vs_stl.py", "stl"),
    ("e2", "e2_width_sweep.py", "stl"),
    ("e3", "e3_data_asymmetry.py", "stl"),
    ("e4", "e4_missing_labels.py", "mtl"),
    ("e5", "e5_unrelated_tasks.py", "stl"),
    ("e6", "e6_digits.py", "stl"),
    ("e9", "e9_positive_control.py", "stl"),
)
EXTRA_EXPERIMENTS = (
    ("e7", "e7_methods.py", "mtl"),
    ("e8", "e8_grouping.py", "stl"),
)
MODES = ("smoke", "quick", "full", "gpu")
# The quick preview runs the experiments whose claims its scale can decide,
# in about 5 minutes. At quick scale (300 steps, 100 target labels) the
# target experiments E3, E5 and E9 decide nothing: the last quick preview
# that ran them judged C2, C3 and C5 inconclusive, every comparison (the
# pedestrian and left-digit references at the floor, the stop-sign CIs
# spanning 0; "Preview verdicts" in docs/results/RESULTS_v2.0.md). They run
# with --full (or --only e3,e5,e9).
# E6 (digits, 10 tasks: 55 runs) is left out too: with it the preview took
# 334 s on the slowest machine kind measured (2-core AVX2 AMD EPYC).
QUICK_EXPERIMENTS = ("e1", "e2", "e4")


def selected_experiments(mode: str, only=()) -> list:
  """The (name, file, baseline) entries that `run(mode, only=...)` runs.

  Raises:
    ConfigError: a name in `only` that is no experiment's.
  """
  every = EXPERIMENTS + EXTRA_EXPERIMENTS
  if only:
    selected = [e for e in every if e[0] in only]
    if len(selected) != len(set(only)):
      raise config_lib.ConfigError(
          f"--only: unknown experiment in {only!r}; expected names from "
          f"{[e[0] for e in every]}")
    return selected
  return [e for e in EXPERIMENTS
          if mode != "quick" or e[0] in QUICK_EXPERIMENTS]


def _not_tested(claim: str, exps: str) -> dict:
  return {"claim": claim, "verdict": "not tested",
          "rule": f"its experiment ({exps}) was not run (the quick preview "
                  "runs e1, e2 and e4; `--full` runs all)",
          "comparisons": []}


def verdicts(summaries: dict) -> list[dict]:
  """Every claim's verdict(s) from the experiments' report summaries, by
  the study-v2 rules (mtljax/study/rules.py; comparisons from claims.py).

  Claims judged per kind (C1, C2, C3, C5, C8) give one verdict per kind.
  """
  out = []

  def by_kind(claim, exps, comps, order=(), need_all=False):
    have = [e in summaries for e in exps.split(",")]
    if not (all(have) if need_all else any(have)):
      out.append(_not_tested(claim, exps))
      return
    vs = rules.verdict_by_kind(claim, comps)
    if not vs:
      out.append({**rules.verdict(claim, []), "rule": "no comparison"})
    for k in sorted(vs, key=lambda k: (order.index(k) if k in order
                                       else len(order), k)):
      out.append(vs[k])

  by_kind(claims.C1, "e1,e6", claims.sharing(summaries), claims.KINDS_C1)
  c2 = claims.asymmetry(summaries)
  by_kind(claims.C2, "e3", [c for c in c2 if c.kind == claims.C2_KIND])
  by_kind(claims.C2_CONTEXT, "e3", [c for c in c2
                                    if c.kind != claims.C2_KIND])
  by_kind(claims.C3, "e3,e5", claims.features(summaries), need_all=True)
  if "e4" in summaries:
    out.append(rules.verdict(claims.C4, claims.missing(summaries)))
  else:
    out.append(_not_tested(claims.C4, "e4"))
  by_kind(claims.C5, "e9", claims.positive_control(summaries))
  if "e2" in summaries or "e6" in summaries:
    comps, notes = claims.size(summaries)
    out.append({**rules.verdict_none_against(claims.C6, comps),
                "notes": notes})
  else:
    out.append(_not_tested(claims.C6, "e2,e6"))
  if "e7" in summaries:
    out.append(rules.verdict_none_against(claims.C7,
                                          claims.methods(summaries)))
  else:
    out.append(_not_tested(claims.C7, "e7: `mtljax reproduce --only e7`"))
  by_kind(claims.C8, "e8", claims.grouping(summaries))
  return out


def _fmt_outcome(j: dict) -> str:
  if j.get("mean") is None or not np.isfinite(j["mean"]):
    return f"{j['name']}: n/a ({j['outcome']})"
  ci = (f" [{j['lo']:+.3f}, {j['hi']:+.3f}]"
        if j.get("lo") is not None and np.isfinite(j["lo"]) else "")
  why = ""
  if j["outcome"] == "inconclusive" and j.get("excluded"):
    why = f" ({j['rule']})"
  elif j.get("p_holm") is not None:
    why = f" (Holm p={j['p_holm']:.2g}, TOST {j['tost_p_holm']:.2g})"
  return f"{j['name']}: {j['mean']:+.3f}{ci} → {j['outcome']}{why}"


def verdict_table(vs: list[dict]) -> str:
  """Markdown: claim, verdict, the rule that decided it, the evidence."""
  lines = ["| claim | verdict | rule | evidence (paired diff per seed, 95% "
           "CI → outcome) |", "|---|---|---|---|"]
  for v in vs:
    ev = [_fmt_outcome(j) for j in v.get("comparisons", [])]
    ev += [f"<i>{n}</i>" for n in v.get("notes", [])]
    lines.append(f"| {v['claim']} | **{v['verdict']}** | {v['rule']} | "
                 f"{'<br>'.join(ev) or '—'} |")
  return "\n".join(lines)


def _load_existing(workdir: str, baseline: str, title: str) -> dict | None:
  """The summary of an experiment already in `workdir` (E7/E8 run apart).

  From its points' results.json files; else from the report.json that
  `write_report` left there (an experiment kept as its report only, such as
  E8's in docs/results/grouping), if that summary has this baseline.
  """
  exp_dir = os.path.join(workdir, title)
  if not os.path.isdir(exp_dir):
    return None
  try:
    results = report_lib.load_results([exp_dir])
  except (report_lib.ReportError, OSError):
    results = None
  if results:
    return report_lib.summarize(results, baseline=baseline)
  try:
    with open(os.path.join(exp_dir, "report.json")) as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return None
  if (not isinstance(summary, dict) or summary.get("baseline") != baseline
      or not isinstance(summary.get("conditions"), list)):
    return None
  return summary


def reproduce(mode: str, workdir: str, only=None,
              experiments: str | None = None) -> list[dict]:
  """Runs the experiments' sweeps, reports them, and prints the verdicts.

  Args:
    mode: "quick", "full" or "smoke" (the config variant).
    workdir: parent of one directory per experiment; rerunning resumes.
    only: optional experiment names ("e1", ...) to run.
    experiments: the folder of experiment files (see `experiments_dir`).

  Returns:
    The verdicts (also written to workdir/verdicts.json and VERDICTS.md).
  """
  if mode not in MODES:
    raise config_lib.ConfigError(f"unknown reproduce mode {mode!r}; "
                                 f"expected one of {MODES}")
  exp_root = experiments_dir(experiments)
  summaries, times = {}, {}
  every = EXPERIMENTS + EXTRA_EXPERIMENTS
  selected = selected_experiments(mode, only)
  # Validate every experiment and every sweep point (against its dataset)
  # before the first one trains.
  plans = []
  for name, path, baseline in selected:
    spec = f"{os.path.join(exp_root, path)}:{mode}"
    cfg, points = config_lib.load_config(spec), config_lib.load_sweep(spec)
    try:
      prepared = sweep_lib.prepare_sweep(cfg, points,
                                         os.path.join(workdir, cfg.name))
    except config_lib.ConfigError as e:
      raise config_lib.ConfigError(f"{name} ({path}:{mode}): {e}") from None
    plans.append((name, baseline, cfg, points, prepared))
  os.makedirs(workdir, exist_ok=True)  # only once every plan is valid
  for name, baseline, cfg, points, prepared in plans:
    t0 = time.perf_counter()
    exp_dir = os.path.join(workdir, cfg.name)
    log.info("== %s: %d sweep point(s) -> %s", cfg.name, len(points), exp_dir)
    dirs = sweep_lib.run_sweep(cfg, points, exp_dir, prepared=prepared)
    # Only this sweep's points: a point of an earlier design left in the
    # directory must not count.
    summaries[name] = report_lib.write_report(
        report_lib.load_results(dirs), exp_dir, baseline=baseline,
        title=cfg.name)
    times[name] = time.perf_counter() - t0
  # Experiments not run now but already in the workdir (an earlier
  # invocation, or `--only e7,e8`) still count toward their claims.
  for (name, path, baseline) in every:
    if name not in summaries:
      title = config_lib.load_config(
          f"{os.path.join(exp_root, path)}:{mode}").name
      found = _load_existing(workdir, baseline, title)
      if found is not None:
        summaries[name] = found
  vs = verdicts(summaries)
  table = verdict_table(vs)
  total = sum(times.values())
  flag = {"full": " --full", "smoke": " --smoke",
          "gpu": " --full --profile gpu"}.get(mode, "")
  if only:
    flag += f" --only {','.join(only)}"
  text = (f"# Verdicts ({mode})\n\nCommand: `mtljax reproduce{flag}`; wall "
          f"time of this "
          f"invocation {total:.0f} s ("
          + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
          + "; resumed experiments take less).\n\n" + table + "\n\n"
          "Per-experiment tables and plots: "
          + ", ".join(f"`{p[2].name}/report.md`" for p in plans) + ".\n")
  with open(os.path.join(workdir, "VERDICTS.md"), "w") as f:
    f.write(text)
  writers.write_json(os.path.join(workdir, "verdicts.json"),
                     {"mode": mode, "seconds": times, "verdicts": vs})
  print(text)
  return vs
