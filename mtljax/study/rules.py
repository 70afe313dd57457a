"""Study v2's verdict rules (issue: study v2).

Committed before any v2 result, then revised once, after the quick preview
and before the CPU study's results (RULES_MARKDOWN lists the revisions).

A claim is judged from *comparisons*, each one paired difference per seed
(signed so that > 0 favours the claim) with the reference it is measured
against (the STL arm's metric per seed). Each comparison gets one outcome,
in this order:

  1. "inconclusive" if the reference's mean lies outside its metric's range
     (`REFERENCE_RANGES`: off the floor and the ceiling; a target that no arm
     learns, or one every arm learns perfectly, tells nothing), if fewer
     than 2 seeds pair up, or if the difference is exactly 0 on every seed
     (the compared arms are the same networks);
  2. "equivalent" if TOST (two one-sided t-tests, each at 5%) puts the
     difference inside ±margin (`margin_for`: 0.01 for AUC, 1% of the
     reference's mean otherwise): a difference inside the margin is not
     one that matters, even when a t-test finds it;
  3. "favours" if the t-test's p < 0.05 and the mean difference is > 0;
  4. "against" if p < 0.05 and it is < 0;
  5. "inconclusive" otherwise: too wide for a difference or equivalence.
Rules 2-5 use p-values Holm-adjusted over the comparisons of the same claim
and kind that rule 1 did not settle (`holm_adjust`).

`combine` turns a claim's outcomes into one verdict, ignoring the
inconclusive ones:
  * none decisive: "inconclusive";
  * all "favours": "supported"; all "against": "not supported";
  * all "equivalent": "equivalent";
  * anything else: "mixed".
Every verdict carries the rule that decided it and the counts.

Claim-specific rules:
  * C1 (one MTL network beats separate STL networks) is never pooled across
    unlike comparisons: equal width, equal parameters and equal compute each
    get their own verdict (`verdict_by_kind`).
  * C6 (MTL does not hurt once the network is big enough) is judged only at
    widths where STL has plateaued (`plateaued_widths`), one-sided
    (`verdict_none_against`).
  * C3 (MTL helps when the tasks share features) is judged as the contrast
    (shared − unrelated auxiliary tasks), per seed, with both STL
    references off the floor and the ceiling (`contrast`).
  * C7 (no MTL method beats tuned equal weighting) is one-sided
    (`verdict_none_against`).

`RULES_MARKDOWN` is this text for docs/RESULTS.md
(scripts/make_results_doc.py includes it).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import stats as sp_stats

from mtljax.analysis import stats

ALPHA = 0.05
OUTCOMES = ("favours", "against", "equivalent", "inconclusive")
VERDICTS = ("supported", "not supported", "equivalent", "mixed",
            "inconclusive")
# Where a reference is "off its floor and ceiling", per metric. A metric
# without a range here has none: every reference counts.
REFERENCE_RANGES = {"auc": (0.6, 0.95), "ap": (0.2, 0.95),
                    "acc": (0.2, 0.98), "r2": (0.1, 0.95),
                    "primary": (0.2, 0.95)}
AUC_MARGIN = 0.01
RELATIVE_MARGIN = 0.01  # of the reference, for metrics other than AUC


@dataclasses.dataclass(frozen=True)
class Comparison:
  """One paired comparison of a claim.

  Attributes:
    name: what is compared, e.g. "mtl_scenes w=16: MTL − STL (equal width)".
    diffs: per seed, the difference signed so that > 0 favours the claim.
    reference: per seed, the reference arm's metric (STL's), for the floor
      and ceiling check and the margin.
    metric: the metric ("auc", "acc", "r2", ...).
    kind: for claims judged per kind (C1: "equal width", "equal
      parameters", "equal compute"); "" otherwise.
    margin: the equivalence margin, where the difference is not in the
      reference's metric (C8's Δm, in %: 1 point); None: `margin_for`.
    also_reference: a second reference that must also lie off the floor and
      the ceiling (C3: the control's STL metric); () for none.
  """
  name: str
  diffs: Sequence[float]
  reference: Sequence[float]
  metric: str = "auc"
  kind: str = ""
  margin: float | None = None
  also_reference: Sequence[float] = ()


def margin_for(metric: str, reference_mean: float) -> float:
  """The equivalence margin: ±0.01 AUC, else ±1% of the reference."""
  if metric == "auc":
    return AUC_MARGIN
  return RELATIVE_MARGIN * abs(reference_mean)


def tost_p(diffs: Sequence[float], margin: float) -> float:
  """TOST p-value that the mean difference lies within ±margin.

  The larger of the one-sided t-test p-values of H0: mean <= -margin and
  H0: mean >= +margin (Schuirmann 1987); < ALPHA means equivalent.
  """
  d = np.asarray([x for x in diffs if x is not None and np.isfinite(x)],
                 np.float64)
  if len(d) < 2 or not margin > 0:
    return math.nan
  if np.ptp(d) == 0:
    # Zero spread: the mean is exact, inside or outside the margin.
    return 0.0 if abs(d[0]) < margin else 1.0
  lo = sp_stats.ttest_1samp(d, -margin, alternative="greater").pvalue
  hi = sp_stats.ttest_1samp(d, margin, alternative="less").pvalue
  return float(max(lo, hi))


def _p_diff(diffs) -> float:
  """Two-sided one-sample t-test p-value of mean(diffs) = 0."""
  d = np.asarray([x for x in diffs if x is not None and np.isfinite(x)],
                 np.float64)
  if len(d) < 2:
    return math.nan
  if np.ptp(d) == 0:
    return 0.0 if d[0] != 0 else 1.0
  return float(sp_stats.ttest_1samp(d, 0.0).pvalue)


def _off_range(metric: str, values) -> str | None:
  """Why a reference's mean is at the floor or the ceiling, or None."""
  v = np.asarray([x for x in values if x is not None], np.float64)
  mean = float(np.nanmean(v)) if v.size else math.nan
  rng = REFERENCE_RANGES.get(metric)
  if rng is not None and not (rng[0] <= mean <= rng[1]):
    return (f"reference {metric} {mean:.3f} outside [{rng[0]:g}, "
            f"{rng[1]:g}] (floor or ceiling)")
  return None


def _decide(out: dict, p: float, tost: float, m: float, where: str = ""
            ) -> dict:
  """Rules 2-5 from the (possibly Holm-adjusted) p-values."""
  if tost < ALPHA:
    return {**out, "outcome": "equivalent",
            "rule": f"TOST{where} p={tost:.3g} < {ALPHA:g} within ±{m:.3g}"}
  if p < ALPHA and out["mean"] > 0:
    return {**out, "outcome": "favours",
            "rule": f"difference above 0 (t-test{where} p={p:.3g})"}
  if p < ALPHA and out["mean"] < 0:
    return {**out, "outcome": "against",
            "rule": f"difference below 0 (t-test{where} p={p:.3g})"}
  return {**out, "outcome": "inconclusive",
          "rule": f"CI [{out['lo']:+.3f}, {out['hi']:+.3f}]: t-test{where} "
                  f"p={p:.3g}, TOST{where} p={tost:.3g} (margin ±{m:.3g}): "
                  "neither a difference nor equivalence"}


def judge(c: Comparison) -> dict:
  """One comparison's outcome and the rule that decided it (module doc),
  before any correction for the other comparisons of its claim."""
  ref = np.asarray([x for x in c.reference if x is not None], np.float64)
  ref_mean = float(np.nanmean(ref)) if ref.size else math.nan
  mean, lo, hi, n = stats.mean_ci(list(c.diffs), 1 - ALPHA)
  m = margin_for(c.metric, ref_mean) if c.margin is None else c.margin
  out = {"name": c.name, "kind": c.kind, "metric": c.metric, "n": n,
         "mean": mean, "lo": lo, "hi": hi, "margin": m,
         "reference_mean": ref_mean, "tost_p": tost_p(c.diffs, m),
         "p": _p_diff(c.diffs), "excluded": True}
  why = _off_range(c.metric, c.reference) or (
      "control " + _off_range(c.metric, c.also_reference)
      if len(c.also_reference) and _off_range(c.metric, c.also_reference)
      else None)
  if why:
    return {**out, "outcome": "inconclusive", "rule": why}
  if n < 2 or not np.isfinite(lo):
    return {**out, "outcome": "inconclusive",
            "rule": f"fewer than 2 paired seeds (n={n})"}
  d = [x for x in c.diffs if x is not None and np.isfinite(x)]
  if all(x == 0 for x in d):
    return {**out, "outcome": "inconclusive",
            "rule": "identical on every seed: the compared arms are the "
                    "same networks"}
  return _decide({**out, "excluded": False}, out["p"], out["tost_p"], m)


def holm_adjust(judged: Sequence[dict]) -> list[dict]:
  """Rules 2-5 again under Holm's correction over one claim's (kind's)
  comparisons: the difference p-values and the TOST p-values are each
  Holm-adjusted over the comparisons that rule 1 (floor, ceiling, fewer
  than 2 seeds, identical arms) did not settle, which keep their outcome.
  """
  live = [i for i, j in enumerate(judged) if not j["excluded"]]
  nan1 = lambda p: 1.0 if not np.isfinite(p) else p
  p = stats.holm([nan1(judged[i]["p"]) for i in live]) if live else []
  t = stats.holm([nan1(judged[i]["tost_p"]) for i in live]) if live else []
  out = [dict(j) for j in judged]
  for k, i in enumerate(live):
    j = {**out[i], "p_holm": float(p[k]), "tost_p_holm": float(t[k])}
    out[i] = _decide(j, float(p[k]), float(t[k]), j["margin"],
                     " (Holm)" if len(live) > 1 else "")
  return out


def combine(claim: str, judged: Sequence[dict]) -> dict:
  """A claim's verdict from its judged comparisons (module doc)."""
  decisive = [j for j in judged if j["outcome"] != "inconclusive"]
  counts = {o: sum(j["outcome"] == o for j in judged) for o in OUTCOMES}
  tally = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
  kinds = {j["outcome"] for j in decisive}
  if not decisive:
    verdict, rule = "inconclusive", "no decisive comparison"
  elif kinds == {"favours"}:
    verdict, rule = "supported", "every decisive comparison favours it"
  elif kinds == {"against"}:
    verdict, rule = "not supported", "every decisive comparison is against it"
  elif kinds == {"equivalent"}:
    verdict, rule = "equivalent", "every decisive comparison is equivalent"
  else:
    verdict, rule = "mixed", "decisive comparisons disagree"
  return {"claim": claim, "verdict": verdict,
          "rule": f"{rule} ({tally or 'no comparisons'})",
          "comparisons": list(judged)}


def verdict(claim: str, comparisons: Sequence[Comparison]) -> dict:
  """judge every comparison, correct for the claim's others (Holm), then
  combine them."""
  return combine(claim, holm_adjust([judge(c) for c in comparisons]))


def verdict_none_against(claim: str, comparisons: Sequence[Comparison]
                         ) -> dict:
  """For a claim that nothing beats a reference (C7: no method beats tuned
  equal weighting; C6: MTL does not hurt once STL has plateaued): with
  Holm's correction, "not supported" when any comparison is "against";
  "supported" only when every comparison that rule 1 did not settle is
  decisive and none is "against" (each favours the claim or is equivalent);
  "inconclusive" otherwise, so that missing evidence never reads as
  support.
  """
  judged = holm_adjust([judge(c) for c in comparisons])
  out = combine(claim, judged)
  tally = out["rule"][out["rule"].index(" ("):]
  live = [j for j in judged if not j["excluded"]]
  outcomes = {j["outcome"] for j in live}
  if "against" in outcomes:
    out["verdict"] = "not supported"
    out["rule"] = "a comparison is against it" + tally
  elif live and "inconclusive" not in outcomes:
    out["verdict"] = "supported"
    out["rule"] = ("every comparison favours it or is equivalent"
                   + tally)
  else:
    out["verdict"] = "inconclusive"
    out["rule"] = ("some comparison is neither against it nor decisive"
                   if live else "no comparison off the floor and ceiling"
                   ) + tally
  return out


def verdict_by_kind(claim: str, comparisons: Sequence[Comparison]
                    ) -> dict[str, dict]:
  """One verdict per comparison kind, never pooled (C1's rule)."""
  kinds = list(dict.fromkeys(c.kind for c in comparisons))
  return {k: verdict(f"{claim} [{k}]" if k else claim,
                     [c for c in comparisons if c.kind == k]) for k in kinds}


def plateaued_widths(widths: Sequence[int], stl_means: Sequence[float],
                     metric: str = "auc") -> list[int]:
  """The widths at which STL has plateaued (C6's rule).

  Width w has plateaued when the sweep also has 2w and STL's mean metric
  gains less than the margin from w to 2w. The largest width is never
  known to have plateaued (there is no doubling to look at), nor is one
  whose doubling is not in the sweep.
  """
  by_w = {int(w): float(m) for w, m in zip(widths, stl_means)}
  return [w for w in sorted(by_w)
          if 2 * w in by_w
          and by_w[2 * w] - by_w[w] < margin_for(metric, by_w[w])]


def contrast(name: str, shared: dict, unrelated: dict, reference: dict,
             metric: str = "auc", kind: str = "",
             control_reference: dict | None = None) -> Comparison:
  """C3's comparison: (shared − unrelated) per seed, paired by seed.

  Args:
    name: the comparison's label.
    shared / unrelated: {seed: MTL − STL on the target} with shared and
      with unrelated auxiliary tasks, at matched target difficulty.
    reference: {seed: the target's STL metric} with the shared tasks.
    metric / kind: as `Comparison`'s.
    control_reference: {seed: the control's target STL metric}, which must
      lie off the floor and the ceiling too (a control target that STL does
      not learn makes the contrast just the shared gain).
  """
  seeds = sorted(set(shared) & set(unrelated))
  ctrl = control_reference or {}
  return Comparison(name, [shared[s] - unrelated[s] for s in seeds],
                    [reference[s] for s in seeds if s in reference], metric,
                    kind, also_reference=[ctrl[s] for s in seeds
                                          if s in ctrl])


RULES_MARKDOWN = """\
## Study v2 verdict rules

These rules are code in `mtljax/study/rules.py`. They were committed before any study-v2
result existed, then revised once, after the quick preview and before the CPU study's
results (the list at the end). A claim is judged from paired comparisons: per seed, a
difference signed so that > 0 favours the claim, with the STL reference it is measured
against. Each comparison gets one outcome, checked in this order:

1. **inconclusive** if the reference's mean lies outside its range, at the floor or the
   ceiling. The ranges: AUC [0.6, 0.95], AP [0.2, 0.95], accuracy [0.2, 0.98],
   R² [0.1, 0.95], primary [0.2, 0.95]. Also inconclusive: fewer than 2 paired seeds, or a
   difference of exactly 0 on every seed (the compared arms are the same networks).
2. **equivalent** if TOST (two one-sided t-tests, each at 5%) puts the difference within
   ±0.01 AUC, or ±1% of the reference's mean for other metrics. A difference inside the
   margin is not one that matters, even where a t-test finds it.
3. **favours** if the paired t-test gives p < 0.05 and the mean difference is above 0.
4. **against** if p < 0.05 and it is below 0.
5. **inconclusive** otherwise.

Rules 2–5 use p-values that are Holm-adjusted over the comparisons of the same claim and
kind that rule 1 left open.

A claim's verdict ignores its inconclusive comparisons:

* **supported**: every decisive comparison favours it.
* **not supported**: every decisive comparison is against it.
* **equivalent**: every decisive comparison is equivalent.
* **mixed**: the decisive comparisons disagree.
* **inconclusive**: there is no decisive comparison.

Each verdict names the rule that decided it and the counts behind it.

Claim-specific rules:

* **C1** ("one MTL network beats separate networks") is not pooled across unlike
  comparisons. Equal width, equal parameters and equal compute each get a verdict of their
  own.
* **C2** ("a big gain needs far more auxiliary data") is judged on the growth: the target's
  MTL − STL gain with all auxiliary labels minus the gain with as many as the target's. The
  gains themselves, under each loss, are reported beside it as context ("C2 context").
* **C3** ("MTL helps when tasks share features") is judged as the contrast
  shared − unrelated auxiliary tasks, per seed. Both targets' STL references must lie off
  the floor and the ceiling.
* **C6** is judged only at widths where STL has plateaued: doubling the width gains STL less
  than the margin. There it is one-sided, like C7: "MTL does not hurt once the network is big
  enough". The "hurts when too small" half is reported, not judged.
* **C7** ("no MTL method beats tuned equal weighting") is one-sided. It is supported only
  when every comparison that rule 1 left open favours equal weighting or is equivalent to
  it. It is not supported when some method beats equal weighting, and is inconclusive
  otherwise.
* **C8**'s Δm comparison (against STL, in %) has an equivalence margin of 1 point. E8's
  negative control (`mtl_scenes/unrelated`) is not part of C8.

Revisions after the quick preview, before the CPU study's results, each prompted by a
review of the code and the preview:

* Holm's correction within each claim and kind. At first only C7 had it.
* Equivalence before difference (rule 2). At first a difference inside the margin counted
  as one.
* Identical arms are inconclusive (rule 1). At first C8's selection that *is* STL came out
  "equivalent" to STL.
* C3's control reference gets the floor and ceiling check.
* C2's verdict rests on the growth alone.
* C6 and C7 are one-sided, and missing evidence never reads as support.
* Per-condition metrics: a condition whose tasks share one metric (AUC) is judged in it,
  even inside a summary that mixes datasets (which reports "primary").
"""
