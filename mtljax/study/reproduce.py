"""The reproduction of the lecture's claims: six experiments and a verdict table.

    mtljax reproduce            # quick: 5 seeds, small data, minutes on a CPU
    mtljax reproduce --full     # the study behind docs/RESULTS.md, 10 seeds

Each experiment's sweep (experiments/e*.py) is run into WORKDIR/<experiment>,
reported there (report.md, report.json, plots/), and then each claim gets a
verdict from the paired, seed-level statistics — "supported", "not
supported" or "mixed" — written to WORKDIR/VERDICTS.md and verdicts.json and
printed. The rules are fixed here, before any result is seen, and never
tuned: a claim is supported only where 95% CIs of paired differences say so.
"""

from __future__ import annotations

import logging
import os
import time


from mtljax import config as config_lib
from mtljax.analysis import report as report_lib
from mtljax.analysis import stats
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


# (name, config file, baseline arm of its report)
EXPERIMENTS = (
    ("e1", "e1_mtl_vs_stl.py", "stl"),
    ("e2", "e2_width_sweep.py", "stl"),
    ("e3", "e3_data_asymmetry.py", "stl"),
    ("e4", "e4_missing_labels.py", "mtl"),
    ("e5", "e5_unrelated_tasks.py", "stl"),
    ("e6", "e6_digits.py", "stl"),
)
TARGET_TASK = "pedestrian"  # E3 and E5's low-label target (task 0)


def _mean_diff(cond: dict, arm: str, task: str | None = None) -> dict | None:
  comp = cond["comparisons"].get(arm)
  if comp is None:
    return None
  return comp["mean"] if task is None else comp["per_task"][task]


def _fmt(d: dict | None) -> str:
  if d is None or d.get("mean_diff") is None:
    return "n/a"
  lo, hi = d.get("lo"), d.get("hi")
  ci = (f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None
        else "")
  return f"{d['mean_diff']:+.3f}{ci}"


def _sig(d: dict | None) -> int:
  """+1 / -1 when the 95% CI of a paired difference excludes 0, else 0."""
  if d is None or d.get("lo") is None or d.get("hi") is None:
    return 0
  return 1 if d["lo"] > 0 else (-1 if d["hi"] < 0 else 0)


def _seed_diffs(cond: dict, arm: str, base: str, task: str) -> dict[int, float]:
  a, b = cond["arms"].get(arm), cond["arms"].get(base)
  if a is None or b is None:
    return {}
  va = dict(zip(a["seeds"], a["test"]["per_task"][task]["values"]))
  vb = dict(zip(b["seeds"], b["test"]["per_task"][task]["values"]))
  return {s: va[s] - vb[s] for s in va if s in vb
          and va[s] is not None and vb[s] is not None}


# ----------------------------------------------------------- claim rules.
def verdict_sharing(summaries: dict) -> dict:
  """Seed: one network for all tasks beats separate single-task networks."""
  rows, signs = [], []
  for exp in ("e1", "e6"):
    for c in summaries.get(exp, {}).get("conditions", []):
      for arm in ("stl", "stl_matched"):
        if arm == "stl":
          d = _mean_diff(c, "mtl")          # mtl − stl (baseline stl)
        else:
          d = _paired_vs(c, "mtl", "stl_matched")
        if d is None:
          continue
        rows.append(f"{exp} {c['label']}: MTL − {arm.upper()} mean test AUC "
                    f"{_fmt(d)}")
        signs.append(_sig(d))
  return _vote("sharing: one MTL network beats separate STL networks",
               rows, signs)


def _paired_vs(cond: dict, arm: str, base: str) -> dict | None:
  a, b = cond["arms"].get(arm), cond["arms"].get(base)
  if a is None or b is None:
    return None
  nan = lambda v: float("nan") if v is None else v
  va = dict(zip(a["seeds"], map(nan, a["test"]["mean"]["values"])))
  vb = dict(zip(b["seeds"], map(nan, b["test"]["mean"]["values"])))
  seeds = [s for s in va if s in vb]
  return stats.paired_diff([va[s] for s in seeds], [vb[s] for s in seeds])


def _vote(claim: str, rows: list[str], signs: list[int]) -> dict:
  if not signs:
    v = "not tested"
  elif all(s > 0 for s in signs):
    v = "supported"
  elif not any(s > 0 for s in signs):
    v = "not supported"
  else:
    v = "mixed"
  return {"claim": claim, "verdict": v, "evidence": rows}


def verdict_size(summaries: dict) -> dict:
  """Seed: MTL hurts only when the network is not big enough."""
  claim = "size: MTL hurts only when the network is too small"
  conds = summaries.get("e2", {}).get("conditions", [])
  pts = []
  for c in conds:
    w = c["condition"].get("model.width")
    d = _mean_diff(c, "mtl")
    if w is not None and d is not None:
      pts.append((w, d))
  pts.sort()
  rows = [f"width {w}: MTL − STL mean test AUC {_fmt(d)}" for w, d in pts]
  if len(pts) < 2:
    return {"claim": claim, "verdict": "not tested", "evidence": rows}
  s = [_sig(d) for _, d in pts]
  worse = [i for i, x in enumerate(s) if x < 0]
  if s[-1] < 0:
    v = "not supported"  # MTL still hurts at the largest width tested
  elif worse and max(worse) < min(i for i, x in enumerate(s) if x >= 0):
    v = "supported"
  elif not worse:
    v = "mixed"
    rows.append("MTL was not significantly worse at any width tested, so the "
                "'hurts when too small' half is not observed")
  else:
    v = "mixed"
  return {"claim": claim, "verdict": v, "evidence": rows}


def verdict_asymmetry(summaries: dict) -> dict:
  """Seed: a big gain needs the other tasks to have much more data."""
  claim = ("data: a big MTL gain on a task needs far more data on the other "
           "tasks")
  pts = []
  for c in summaries.get("e3", {}).get("conditions", []):
    budget = c["condition"].get("data.label_budget")
    if budget is None:
      continue
    pts.append((budget[1], c))
  pts.sort(key=lambda p: p[0])
  rows = [f"aux labels/task {a}: target ({TARGET_TASK}) MTL − STL test AUC "
          f"{_fmt(_mean_diff(c, 'mtl', TARGET_TASK))}" for a, c in pts]
  if len(pts) < 2:
    return {"claim": claim, "verdict": "not tested", "evidence": rows}
  lo_d = _seed_diffs(pts[0][1], "mtl", "stl", TARGET_TASK)
  hi_d = _seed_diffs(pts[-1][1], "mtl", "stl", TARGET_TASK)
  seeds = sorted(set(lo_d) & set(hi_d))
  growth = stats.paired_diff([hi_d[s] for s in seeds], [lo_d[s] for s in seeds])
  rows.append(f"gain at most aux data − gain at equal data: {_fmt(growth)}")
  gain_hi = _mean_diff(pts[-1][1], "mtl", TARGET_TASK)
  if _sig(gain_hi) > 0 and _sig(growth) > 0:
    v = "supported"
  elif _sig(gain_hi) <= 0 and _sig(growth) <= 0:
    v = "not supported"
  else:
    v = "mixed"
  return {"claim": claim, "verdict": v, "evidence": rows}


def verdict_missing(summaries: dict) -> dict:
  """Seed: with "?" labels, sum the loss only over observed labels."""
  claim = "missing labels: the masked loss beats '?'-as-negative and dropping"
  rows, signs = [], []
  for c in summaries.get("e4", {}).get("conditions", []):
    for arm in ("mtl_negative", "mtl_drop"):
      d = _mean_diff(c, arm)  # arm − mtl (masked): < 0 means mask is better
      if d is None:
        continue
      rows.append(f"{c['label']}: {arm} − masked mean test AUC {_fmt(d)}")
      signs.append(-_sig(d))
  return _vote(claim, rows, signs)


def verdict_features(summaries: dict) -> dict:
  """Seed: MTL makes sense when the tasks share low-level features."""
  claim = ("features: MTL helps when tasks share low-level features (and not "
           "with unrelated or shuffled auxiliary tasks)")
  by = {}
  for c in summaries.get("e5", {}).get("conditions", []):
    cond = c["condition"]
    key = ("shuffled" if cond.get("data.shuffle_tasks") else
           ("unrelated" if "unrelated" in cond.get("data.name", "") else
            "shared"))
    by[key] = _mean_diff(c, "mtl", TARGET_TASK)
  rows = [f"{k}: target ({TARGET_TASK}) MTL − STL test AUC {_fmt(d)}"
          for k, d in by.items()]
  if "shared" not in by:
    return {"claim": claim, "verdict": "not tested", "evidence": rows}
  shared = _sig(by["shared"])
  controls = [_sig(by[k]) for k in ("unrelated", "shuffled") if k in by]
  if shared > 0 and all(x <= 0 for x in controls):
    v = "supported"
  elif shared <= 0:
    v = "not supported"
    rows.append("no significant MTL gain even with shared features")
  else:
    v = "mixed"
  return {"claim": claim, "verdict": v, "evidence": rows}


RULES = (verdict_sharing, verdict_size, verdict_asymmetry, verdict_missing,
         verdict_features)


def verdicts(summaries: dict) -> list[dict]:
  return [rule(summaries) for rule in RULES]


def verdict_table(vs: list[dict]) -> str:
  lines = ["| claim | verdict | evidence (paired diff, 95% CI) |",
           "|---|---|---|"]
  for v in vs:
    lines.append(f"| {v['claim']} | **{v['verdict']}** | "
                 f"{'<br>'.join(v['evidence']) or '—'} |")
  return "\n".join(lines)


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
  exp_root = experiments_dir(experiments)
  summaries, times = {}, {}
  selected = [e for e in EXPERIMENTS if not only or e[0] in only]
  if only and len(selected) != len(only):
    raise config_lib.ConfigError(
        f"--only: unknown experiment in {only!r}; expected names from "
        f"{[e[0] for e in EXPERIMENTS]}")
  # Validate every experiment and sweep before the first one trains.
  plans = []
  for name, path, baseline in selected:
    spec = f"{os.path.join(exp_root, path)}:{mode}"
    plans.append((name, baseline, config_lib.load_config(spec),
                  config_lib.load_sweep(spec)))
  os.makedirs(workdir, exist_ok=True)  # only once every plan is valid
  for name, baseline, cfg, points in plans:
    t0 = time.perf_counter()
    exp_dir = os.path.join(workdir, cfg.name)
    log.info("== %s: %d sweep point(s) -> %s", cfg.name, len(points), exp_dir)
    sweep_lib.run_sweep(cfg, points, exp_dir)
    summaries[name] = report_lib.write_report(
        report_lib.load_results([exp_dir]), exp_dir, baseline=baseline,
        title=cfg.name)
    times[name] = time.perf_counter() - t0
  vs = verdicts(summaries)
  table = verdict_table(vs)
  total = sum(times.values())
  flag = {"full": " --full", "smoke": " --smoke"}.get(mode, "")
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
