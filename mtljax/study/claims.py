"""Study v2's claims: each experiment's report summary → paired comparisons.

Every function here reads the report summaries (`report.summarize`, one
per experiment) and builds `rules.Comparison`s: one paired difference per
seed, signed so that > 0 favours the claim, with the reference arm's
metric per seed. `rules` then judges them (floor and ceiling, CI, TOST) and
combines them into a verdict; nothing here decides an outcome.

The claims (docs/RESULTS.md, "Study v2"):
  C1 sharing: one MTL network beats separate STL networks (E1, E6; per kind:
     equal width, equal parameters, equal compute; E2's MTL at 2w against
     STL at w is equal-compute evidence too);
  C2 data asymmetry: a big MTL gain on a task needs far more data on the
     other tasks (E3: the gain with every auxiliary label, and its growth
     from equal auxiliary data; per loss);
  C3 shared features: MTL helps when the tasks share features (E3 − E5:
     shared minus unrelated, and shared minus shuffled auxiliary tasks);
  C4 missing labels: the masked loss beats "?"-as-negative and dropping (E4);
  C5 positive control: MTL helps a low-label target on data built for
     sharing (E9);
  C6 size: MTL hurts only when the network is too small (E2, E6; judged at
     widths where STL has plateaued);
  C7 methods: no MTL method beats tuned equal weighting (E7);
  C8 grouping: the best grouping beats both all-in-one and all-separate (E8).
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from mtljax.study import rules


# ------------------------------------------------------------- reading.
def values(cond: dict, arm: str, task: str | None = None) -> dict[int, float]:
  """{seed: test value}: the arm's mean over its tasks, or one task's."""
  a = cond["arms"].get(arm)
  if a is None:
    return {}
  ci = a["test"]["mean"] if task is None else a["test"]["per_task"].get(task)
  if ci is None:
    return {}
  return {s: float(v) for s, v in zip(a["seeds"], ci["values"])
          if v is not None and math.isfinite(v)}


def paired(a: dict, b: dict) -> tuple[list, list]:
  """(a − b per shared seed, b per shared seed)."""
  seeds = sorted(set(a) & set(b))
  return [a[s] - b[s] for s in seeds], [b[s] for s in seeds]


def comparison(name: str, a: dict, b: dict, metric: str, kind: str = "",
               ref: dict | None = None) -> rules.Comparison | None:
  """a − b paired by seed, with b (or `ref`) as the reference; None if no
  seed is shared."""
  diffs, base = paired(a, b)
  if not diffs:
    return None
  if ref is not None:
    seeds = sorted(set(a) & set(b))
    base = [ref[s] for s in seeds if s in ref]
  return rules.Comparison(name, diffs, base, metric, kind)


def _hib(cond: dict, task: str | None = None) -> bool:
  hib = cond.get("task_higher_is_better", {})
  return all(hib.values()) if task is None else hib.get(task, True)


def _metric(summary: dict, cond: dict) -> str:
  """The metric a condition's mean is judged in: its tasks' common metric
  (AUC for binary tasks, even inside a summary that mixes datasets and so
  reports "primary"), else the summary's."""
  ms = set(cond.get("task_metrics", {}).values())
  return ms.pop() if len(ms) == 1 else (summary.get("metric") or "auc")


def _conds(summaries: dict, exp: str, prefix: str | None = None
           ) -> Iterable[tuple[dict, dict]]:
  """(summary, condition) pairs of one experiment (and its named parts:
  conditions whose experiment name starts with `prefix`)."""
  s = summaries.get(exp)
  if not s:
    return []
  return [(s, c) for c in s.get("conditions", [])
          if prefix is None or c["experiment"].startswith(prefix)]


def _field(cond: dict, key: str, default=None):
  return cond["condition"].get(key, default)


def _target(cond: dict) -> tuple[int, str, int, int] | None:
  """(target index, its name, its labels, the auxiliary tasks' labels; -1:
  all) of a target experiment's condition."""
  stl = _field(cond, "stl_tasks")
  budget = _field(cond, "data.label_budget")
  if not stl or not budget or len(budget) != len(cond["task_names"]):
    return None
  t = int(stl[0])
  aux = {int(b) for k, b in enumerate(budget) if k != t}
  return t, cond["task_names"][t], int(budget[t]), (
      aux.pop() if len(aux) == 1 else -2)


def _dataset_label(cond: dict) -> str:
  width = cond["condition"].get("model.width")
  return cond["dataset"] + (f" w={width}" if width is not None else "")


# --------------------------------------------------------------- claims.
C1 = "C1 sharing: one MTL network beats separate STL networks"
C2 = ("C2 data asymmetry: a big MTL gain on a task needs far more data on "
      "the other tasks")
C3 = "C3 shared features: MTL helps when the tasks share features"
C4 = "C4 missing labels: the masked loss beats '?'-as-negative and dropping"
C5 = ("C5 positive control: MTL helps a low-label target on data built for "
      "sharing")
C6 = ("C6 size: MTL does not hurt once the network is big enough (STL "
      "plateaued)")
C2_CONTEXT = ("C2 context: MTL − STL on the low-label target with all "
              "auxiliary labels")
C2_KIND = "growth with auxiliary data"
C7 = "C7 methods: no MTL method beats tuned equal weighting"
C8 = "C8 grouping: the best grouping beats both all-in-one and all-separate"

KINDS_C1 = ("equal width", "equal parameters", "equal compute")


def sharing(summaries: dict) -> list[rules.Comparison]:
  """C1: mean over tasks, MTL − STL per kind (E1, E6, E2's adjacent
  widths)."""
  out = []
  for exp in ("e1", "e6"):
    for s, c in _conds(summaries, exp):
      m, lab = _metric(s, c), f"{exp} {_dataset_label(c)}"
      for arm, base, kind in (("mtl", "stl", "equal width"),
                              ("mtl", "stl_matched", "equal parameters"),
                              ("mtl_matched", "stl", "equal compute")):
        cmp = comparison(f"{lab}: {arm} − {base}", values(c, arm),
                         values(c, base), m, kind)
        if cmp is not None:
          out.append(cmp)
  # E2: MTL at width 2w against STL at w, paired by seed across conditions
  # (the same batches and seeds). The CNN's FLOPs grow as w² past its first
  # layer, so one 2w network costs about four w networks: equal compute
  # for T = 4 tasks only (other T would favour one side; skipped).
  for ds, by_w in _widths(summaries, "e2").items():
    for w, c in by_w.items():
      if 2 * w in by_w and len(c["task_names"]) == 4:
        out.append(comparison(
            f"e2 {c['dataset']}: mtl at w={2 * w} − stl at w={w}",
            values(by_w[2 * w], "mtl"), values(c, "stl"),
            _metric(summaries["e2"], c), "equal compute"))
  return [c for c in out if c is not None]


def _widths(summaries: dict, exp: str) -> dict[str, dict[int, dict]]:
  """{dataset: {width: condition}} of a width sweep."""
  out: dict[str, dict[int, dict]] = {}
  for _, c in _conds(summaries, exp):
    w = _field(c, "model.width")
    # The steps and branching axes are other questions than width.
    if (w is not None and _field(c, "train.steps") is None
        and _field(c, "model.arch", "hps") == "hps"):
      out.setdefault(c["dataset"], {})[int(w)] = c
  return out


def size(summaries: dict) -> tuple[list[rules.Comparison], list[str]]:
  """C6: MTL − STL at the plateaued widths; notes on the others."""
  comps, notes = [], []
  for exp in ("e2", "e6"):
    if exp not in summaries:
      continue
    for ds, by_w in _widths(summaries, exp).items():
      m = _metric(summaries[exp], next(iter(by_w.values())))
      widths = sorted(by_w)
      stl_means = [float(np.mean(list(values(by_w[w], "stl").values())))
                   if values(by_w[w], "stl") else math.nan for w in widths]
      flat = rules.plateaued_widths(widths, stl_means, m)
      for w, sm in zip(widths, stl_means):
        d, _ = paired(values(by_w[w], "mtl"), values(by_w[w], "stl"))
        tag = "plateaued: judged" if w in flat else "not plateaued"
        notes.append(f"{exp} {ds} w={w}: STL {sm:.3f}, MTL − STL "
                     f"{np.mean(d) if d else math.nan:+.3f} ({tag})")
      for w in flat:
        cmp = comparison(f"{exp} {ds} w={w}: mtl − stl",
                         values(by_w[w], "mtl"), values(by_w[w], "stl"), m)
        if cmp is not None:
          comps.append(cmp)
      if not flat:
        notes.append(f"{exp} {ds}: no plateaued width in {widths} (none "
                     "whose doubling, in the sweep, gains STL less than the "
                     "margin): nothing to judge")
  return comps, notes


def _target_gains(summaries: dict, exp: str, prefix: str | None = None):
  """{(dataset, shuffled?, loss, target index, n, aux): (gains, STL ref,
  metric, target name)} of a target experiment, where gains = {arm: {seed:
  arm − stl on the target}} (signed so that > 0 is better)."""
  out = {}
  for _, c in _conds(summaries, exp, prefix):
    tgt = _target(c)
    if tgt is None:
      continue
    t, name, n, aux = tgt
    ref = values(c, "stl", name)
    sign = 1.0 if _hib(c, name) else -1.0
    gains = {}
    for arm in c["arms"]:
      if arm != "stl":
        a = values(c, arm, name)
        gains[arm] = {k: sign * (a[k] - ref[k]) for k in a if k in ref}
    key = (c["dataset"], bool(_field(c, "data.shuffle_tasks")),
           _field(c, "loss.normalize", "per_example"), t, n, aux)
    out[key] = (gains, ref, c["task_metrics"].get(name, "auc"), name)
  return out


def _gain_cmp(name, gains: dict, ref: dict, metric, kind):
  seeds = sorted(set(gains) & set(ref))
  if not seeds:
    return None
  return rules.Comparison(name, [gains[s] for s in seeds],
                          [ref[s] for s in seeds], metric, kind)


def asymmetry(summaries: dict) -> list[rules.Comparison]:
  """C2 per kind: the gain with all auxiliary labels (summed loss), its
  growth from equal auxiliary labels, and the gains of the other losses."""
  g = _target_gains(summaries, "e3")
  out = []
  for (ds, shuf, loss, t, n, aux), (gains, ref, m, task) in sorted(
      g.items()):
    if shuf or aux != -1:
      continue
    lab = f"target {task} ({n} labels)"
    if loss == "per_example":
      out.append(_gain_cmp(f"{lab}: mtl − stl, all auxiliary labels",
                           gains.get("mtl", {}), ref, m,
                           "gain, summed loss"))
      eq = g.get((ds, shuf, loss, t, n, n))
      if eq is not None:
        a, b = gains.get("mtl", {}), eq[0].get("mtl", {})
        seeds = sorted(set(a) & set(b) & set(ref))
        out.append(rules.Comparison(
            f"{lab}: gain with all − gain with {n} auxiliary labels",
            [a[s] - b[s] for s in seeds], [ref[s] for s in seeds], m,
            "growth with auxiliary data"))
    else:
      for arm, kind in (("mtl", "gain, per-task loss"),
                        ("target_weighted", "gain, target-weighted loss")):
        if arm in gains:
          out.append(_gain_cmp(f"{lab}: {arm} ({loss}) − stl", gains[arm],
                               ref, m, kind))
  return [c for c in out if c is not None]


def features(summaries: dict) -> list[rules.Comparison]:
  """C3: (shared − control) gain per seed, per target (rules.contrast).

  The shared condition is E3's with the same target index and labels, all
  auxiliary labels and the summed loss; E5 trains the controls with E3's
  design. The unrelated dataset's task t is another problem under the same
  name (its own cue), so targets are matched by index and label count, and
  both STL references must be off the floor and the ceiling.
  """
  shared = {(k[3], k[4]): v for k, v in _target_gains(summaries, "e3").items()
            if k[2] == "per_example" and k[5] == -1 and not k[1]}
  out = []
  for (ds, shuf, _, t, n, _), (gains, c_ref, m, _) in sorted(
      _target_gains(summaries, "e5").items()):
    if (t, n) not in shared or "mtl" not in gains:
      continue
    s_gains, s_ref, _, s_task = shared[(t, n)]
    control = ("shuffled auxiliary labels" if shuf
               else f"{ds} (its task #{t})")
    out.append(rules.contrast(
        f"target {s_task} ({n} labels): shared − {control}",
        s_gains.get("mtl", {}), gains["mtl"], s_ref, m,
        "vs shuffled auxiliary labels" if shuf else
        "vs unrelated auxiliary tasks", control_reference=c_ref))
  return out


def missing(summaries: dict) -> list[rules.Comparison]:
  """C4: masked − each alternative, mean over tasks (E4)."""
  out = []
  for s, c in _conds(summaries, "e4"):
    for arm in ("mtl_negative", "mtl_drop"):
      cmp = comparison(f"{c['label']}: mask − {arm.split('_', 1)[1]}",
                       values(c, "mtl"), values(c, arm), _metric(s, c),
                       ref=values(c, "mtl"))
      if cmp is not None:
        out.append(cmp)
  return out


def positive_control(summaries: dict) -> list[rules.Comparison]:
  """C5: MTL − STL on each low-label target of E9, per dataset (kind)."""
  out = []
  for (ds, _, _, _, n, _), (gains, ref, m, task) in sorted(
      _target_gains(summaries, "e9").items()):
    cmp = _gain_cmp(f"{ds} target {task} ({n} labels): mtl − stl",
                    gains.get("mtl", {}), ref, m, ds)
    if cmp is not None:
      out.append(cmp)
  return out


def methods(summaries: dict) -> list[rules.Comparison]:
  """C7: EW − each method arm, mean over tasks (E7's report, baseline mtl).

  Signed so that > 0 favours EW: "favours" is EW better, "equivalent" is a
  tie, "against" is a method that beats EW.
  """
  out = []
  for s, c in _conds(summaries, "e7"):
    ew = values(c, "mtl")
    for arm in c["arms"]:
      if arm in ("mtl", "stl"):
        continue
      cmp = comparison(f"{c['dataset']}: EW − {arm}", ew, values(c, arm),
                       _metric(s, c), c["dataset"], ref=ew)
      if cmp is not None:
        out.append(cmp)
  return out


def grouping(summaries: dict) -> list[rules.Comparison]:
  """C8: the validation-best selection against MTL (mean metric) and STL
  (Δm, %: margin 1 point), per dataset (E8)."""
  out = []
  for s, c in _conds(summaries, "e8"):
    if "unrelated" in c["dataset"]:
      continue  # E8's negative control is not evidence for the claim
    gr = c.get("grouping") or {}
    rows = gr.get("by_networks") or []
    scored = [(r["exhaustive"]["val"], -i, r["exhaustive"]) for i, r in
              enumerate(rows) if r.get("exhaustive")
              and r["exhaustive"].get("val") is not None]
    if not scored:
      continue
    sel = max(scored, key=lambda x: (round(x[0], 9), x[1]))[2]
    # The floor and ceiling are STL's, whichever arm is compared.
    ref = list(values(c, "stl").values())
    for key, kind in (("vs_mtl", "vs all-in-one (MTL)"),
                      ("delta_m", "vs all-separate (STL, Δm %)")):
      ci = sel.get(key)
      if not ci or not ci.get("values"):
        continue
      out.append(rules.Comparison(
          f"{c['dataset']}: best selection ({len(sel['groups'])} networks) "
          + ("− MTL" if key == "vs_mtl" else "Δm % vs STL"),
          [v for v in ci["values"]
                                       if v is not None], ref,
          _metric(s, c), kind,
          margin=1.0 if key == "delta_m" else None))
  return out
