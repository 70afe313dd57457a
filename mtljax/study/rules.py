"""Study v2's verdict rules, fixed before any v2 result (issue: study v2).

A claim is judged from *comparisons*, each one paired difference per seed
(signed so that > 0 favours the claim) with the reference it is measured
against (the STL arm's metric per seed). Each comparison gets one outcome by
`judge`, in this order:

  1. "inconclusive" if the reference's mean lies outside its metric's range
     (`REFERENCE_RANGES`: off the floor and the ceiling; a target that no arm
     learns, or one every arm learns perfectly, tells nothing);
  2. "favours" if the 95% t-interval of the difference lies above 0;
  3. "against" if it lies below 0;
  4. "equivalent" if TOST (two one-sided t-tests, each at 5%) puts the
     difference inside ±margin (`margin_for`: 0.01 for AUC, 1% of the
     reference's mean otherwise);
  5. "inconclusive" otherwise: too wide for a difference or equivalence.

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
  * C6 (MTL hurts only when the network is too small) is judged only at
    widths where STL has plateaued: doubling the width gains STL less than
    the margin (`plateaued_widths`).
  * C3 (MTL helps when the tasks share features) is judged as the contrast
    (shared − unrelated auxiliary tasks), per seed, at matched target
    difficulty (`contrast`).
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
  """
  name: str
  diffs: Sequence[float]
  reference: Sequence[float]
  metric: str = "auc"
  kind: str = ""
  margin: float | None = None


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


def judge(c: Comparison) -> dict:
  """One comparison's outcome and the rule that decided it (module doc)."""
  ref = np.asarray([x for x in c.reference if x is not None], np.float64)
  ref_mean = float(np.nanmean(ref)) if ref.size else math.nan
  mean, lo, hi, n = stats.mean_ci(list(c.diffs), 1 - ALPHA)
  m = margin_for(c.metric, ref_mean) if c.margin is None else c.margin
  out = {"name": c.name, "kind": c.kind, "metric": c.metric, "n": n,
         "mean": mean, "lo": lo, "hi": hi, "margin": m,
         "reference_mean": ref_mean, "tost_p": tost_p(c.diffs, m)}
  rng = REFERENCE_RANGES.get(c.metric)
  if rng is not None and not (rng[0] <= ref_mean <= rng[1]):
    return {**out, "outcome": "inconclusive",
            "rule": f"reference {c.metric} {ref_mean:.3f} outside "
                    f"[{rng[0]:g}, {rng[1]:g}] (floor or ceiling)"}
  if n < 2 or not np.isfinite(lo):
    return {**out, "outcome": "inconclusive",
            "rule": f"fewer than 2 paired seeds (n={n})"}
  if lo > 0:
    return {**out, "outcome": "favours", "rule": "95% CI above 0"}
  if hi < 0:
    return {**out, "outcome": "against", "rule": "95% CI below 0"}
  if out["tost_p"] < ALPHA:
    return {**out, "outcome": "equivalent",
            "rule": f"TOST p={out['tost_p']:.3g} < {ALPHA:g} within "
                    f"±{m:.3g}"}
  return {**out, "outcome": "inconclusive",
          "rule": f"CI [{lo:+.3f}, {hi:+.3f}] includes 0 and TOST p="
                  f"{out['tost_p']:.3g} (margin ±{m:.3g}): neither a "
                  "difference nor equivalence"}


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
  """judge every comparison, then combine them."""
  return combine(claim, [judge(c) for c in comparisons])


def holm_adjust(judged: list[dict], diffs: Sequence[Sequence[float]]
                ) -> list[dict]:
  """Outcomes under Holm's family-wise correction over one claim's
  comparisons: a difference counts only if its Holm-adjusted paired t-test
  p-value is < ALPHA, equivalence only if its Holm-adjusted TOST p-value
  is; others become "inconclusive". The floor and ceiling rule stands.
  """
  def p_diff(d):
    d = np.asarray([x for x in d if x is not None and np.isfinite(x)])
    if len(d) < 2:
      return math.nan
    if np.ptp(d) == 0:
      return 0.0 if d[0] != 0 else 1.0
    return float(sp_stats.ttest_1samp(d, 0.0).pvalue)
  nan1 = lambda p: 1.0 if not np.isfinite(p) else p
  pd = stats.holm([nan1(p_diff(d)) for d in diffs]) if judged else []
  pe = stats.holm([nan1(j["tost_p"]) for j in judged]) if judged else []
  out = []
  for j, a, b in zip(judged, pd, pe):
    j = {**j, "p_holm": float(a), "tost_p_holm": float(b)}
    if j["rule"].startswith("reference") or j["outcome"] == "inconclusive":
      out.append(j)
    elif j["outcome"] in ("favours", "against") and a >= ALPHA:
      out.append({**j, "outcome": "inconclusive", "rule":
                  f"{j['rule']}, but Holm-adjusted p={a:.3g} >= {ALPHA:g}"})
    elif j["outcome"] == "equivalent" and b >= ALPHA:
      out.append({**j, "outcome": "inconclusive", "rule":
                  f"{j['rule']}, but Holm-adjusted TOST p={b:.3g} >= "
                  f"{ALPHA:g}"})
    else:
      out.append(j)
  return out


def verdict_none_against(claim: str, comparisons: Sequence[Comparison]
                         ) -> dict:
  """For a claim that nothing beats a reference (C7: no method beats tuned
  equal weighting): "supported" when some comparison is decisive and none
  is "against" (each one favours the reference or is equivalent to it),
  "not supported" when any is "against", "inconclusive" when none is
  decisive. Its many comparisons (every method on every dataset) are
  Holm-corrected (`holm_adjust`), as E7's own report is.
  """
  judged = holm_adjust([judge(c) for c in comparisons],
                       [c.diffs for c in comparisons])
  out = combine(claim, judged)
  decisive = {j["outcome"] for j in judged} - {"inconclusive"}
  if decisive and "against" not in decisive:
    out["verdict"] = "supported"
    out["rule"] = ("no decisive comparison is against it"
                   + out["rule"][out["rule"].index(" ("):])
  elif "against" in decisive:
    out["verdict"] = "not supported"
    out["rule"] = ("a decisive comparison is against it"
                   + out["rule"][out["rule"].index(" ("):])
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
             metric: str = "auc", kind: str = "") -> Comparison:
  """C3's comparison: (shared − unrelated) per seed, paired by seed.

  Args:
    name: the comparison's label.
    shared / unrelated: {seed: MTL − STL on the target} with shared and
      with unrelated auxiliary tasks, at matched target difficulty.
    reference: {seed: the target's STL metric}.
  """
  seeds = sorted(set(shared) & set(unrelated))
  return Comparison(name, [shared[s] - unrelated[s] for s in seeds],
                    [reference[s] for s in seeds if s in reference], metric,
                    kind)


RULES_MARKDOWN = """\
## Study v2 verdict rules (fixed before any v2 result)

These rules are code in `mtljax/study/rules.py` and were committed before any study-v2
result existed. A claim is judged from paired comparisons: per seed, a difference signed so
that > 0 favours the claim, with the STL reference it is measured against. Each comparison
gets one outcome, checked in this order:

1. **inconclusive** if the reference's mean lies outside its range, at the floor or the
   ceiling. The ranges: AUC [0.6, 0.95], AP [0.2, 0.95], accuracy [0.2, 0.98],
   R² [0.1, 0.95], primary [0.2, 0.95].
2. **favours** if the 95% t-interval lies above 0.
3. **against** if it lies below 0.
4. **equivalent** if TOST (two one-sided t-tests, each at 5%) puts the difference within
   ±0.01 AUC, or ±1% of the reference's mean for other metrics.
5. **inconclusive** otherwise.

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
* **C6** ("MTL hurts only when the network is too small") is judged only at widths where
  STL has plateaued: doubling the width gains STL less than the margin.
* **C3** ("MTL helps when tasks share features") is judged as the contrast
  shared − unrelated auxiliary tasks, per seed, at matched target difficulty.
* **C7** ("no MTL method beats tuned equal weighting") is one-sided: it is
  supported when no decisive comparison is against it (every method is worse than
  equal weighting or equivalent to it), and not supported when some method beats it.
  Its comparisons (every method on every dataset) are Holm-corrected: a difference, or an
  equivalence, counts only at a Holm-adjusted p < 0.05. This rule was added with the v2
  claim list. E7's results (docs/METHODS.md, itself Holm-corrected) existed, and the
  correction was added after the uncorrected rule was seen to turn 2 of 36 comparisons
  into "against".
* **C8**'s Δm comparison (against STL, in %) has an equivalence margin of 1 point.
"""
