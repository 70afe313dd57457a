"""Study v2's verdict rules (mtljax/study/rules.py), against hand references.

TOST is checked against its textbook form (two one-sided t statistics with
scipy's t distribution); each outcome path of `judge`, each verdict of
`combine`, C1's no-pooling, C6's plateau and C3's contrast on constructed
inputs whose answer is known.
"""

import math

import numpy as np
import pytest
from scipy import stats as sp_stats

from mtljax.study import rules
from mtljax.study.rules import Comparison

REF = [0.80] * 6   # an AUC reference off its floor and ceiling


def _tost_by_hand(d, m):
  d = np.asarray(d, float)
  n, mean, se = len(d), d.mean(), d.std(ddof=1) / math.sqrt(len(d))
  p_low = 1 - sp_stats.t.cdf((mean + m) / se, n - 1)   # H0: mean <= -m
  p_high = sp_stats.t.cdf((mean - m) / se, n - 1)      # H0: mean >= +m
  return max(p_low, p_high)


@pytest.mark.parametrize("seed", range(5))
def test_tost_matches_the_textbook_form(seed):
  d = np.random.default_rng(seed).normal(0.002 * seed, 0.004, 8)
  for m in (0.005, 0.01, 0.02):
    np.testing.assert_allclose(rules.tost_p(d, m), _tost_by_hand(d, m),
                               rtol=1e-9)


def test_tost_edge_cases():
  assert rules.tost_p([0.003] * 5, 0.01) == 0.0    # exact, inside
  assert rules.tost_p([0.02] * 5, 0.01) == 1.0     # exact, outside
  assert math.isnan(rules.tost_p([0.001], 0.01))   # one seed
  assert math.isnan(rules.tost_p([0.0, 0.001], 0.0))


@pytest.mark.parametrize("diffs, outcome, rule", [
    ([0.03, 0.04, 0.035, 0.05, 0.045, 0.04], "favours",
     "difference above 0"),
    ([-0.03, -0.04, -0.035, -0.05, -0.045, -0.04], "against",
     "difference below 0"),
    ([0.001, -0.002, 0.0015, -0.001, 0.0005, 0.0], "equivalent", "TOST p="),
    ([0.05, -0.06, 0.04, -0.05, 0.06, -0.04], "inconclusive",
     "neither a difference nor equivalence"),
])
def test_each_outcome_and_its_rule(diffs, outcome, rule):
  j = rules.judge(Comparison("x", diffs, REF))
  assert j["outcome"] == outcome and rule in j["rule"]
  assert j["margin"] == 0.01 and j["n"] == 6


@pytest.mark.parametrize("ref", [0.55, 0.97])
def test_a_reference_at_its_floor_or_ceiling_is_inconclusive(ref):
  # A large, clean difference still says nothing there.
  j = rules.judge(Comparison("x", [0.04] * 3 + [0.05] * 3, [ref] * 6))
  assert j["outcome"] == "inconclusive" and "floor or ceiling" in j["rule"]


def test_margin_is_relative_for_other_metrics():
  assert rules.margin_for("auc", 0.7) == 0.01
  assert rules.margin_for("r2", 0.5) == pytest.approx(0.005)
  j = rules.judge(Comparison("r", [0.001, -0.001, 0.0005, -0.0005, 0.0, 0.0],
                             [0.5] * 6, metric="r2"))
  assert j["outcome"] == "equivalent" and j["margin"] == pytest.approx(0.005)
  assert rules.judge(Comparison("one", [0.1], REF[:1]))["outcome"] == (
      "inconclusive")


def _j(outcome):
  return {"outcome": outcome}


@pytest.mark.parametrize("outcomes, verdict", [
    (["favours", "favours", "inconclusive"], "supported"),
    (["against", "against"], "not supported"),
    (["equivalent", "inconclusive", "equivalent"], "equivalent"),
    (["favours", "against"], "mixed"),
    (["favours", "equivalent"], "mixed"),
    (["inconclusive", "inconclusive"], "inconclusive"),
    ([], "inconclusive"),
])
def test_combine(outcomes, verdict):
  v = rules.combine("claim", [_j(o) for o in outcomes])
  assert v["verdict"] == verdict and v["verdict"] in rules.VERDICTS
  assert v["rule"]


def test_c1_kinds_are_not_pooled():
  up = [0.03, 0.04, 0.035, 0.05, 0.045, 0.04]
  down = [-x for x in up]
  cs = [Comparison("w8 width", up, REF, kind="equal width"),
        Comparison("w16 width", up, REF, kind="equal width"),
        Comparison("w8 params", down, REF, kind="equal parameters")]
  by = rules.verdict_by_kind("C1", cs)
  assert by["equal width"]["verdict"] == "supported"
  assert by["equal parameters"]["verdict"] == "not supported"
  # Pooled, the same comparisons would read "mixed": the rule forbids it.
  assert rules.verdict("C1", cs)["verdict"] == "mixed"


def test_plateaued_widths():
  widths = [2, 4, 8, 16, 32]
  stl = [0.70, 0.80, 0.85, 0.855, 0.858]
  assert rules.plateaued_widths(widths, stl) == [8, 16]
  # A width whose doubling is missing is not known to have plateaued.
  assert rules.plateaued_widths([8, 12, 32], [0.85, 0.851, 0.852]) == []


def test_contrast_pairs_by_seed():
  c = rules.contrast("C3", {0: 0.02, 1: 0.03, 2: 0.01},
                     {0: -0.01, 1: 0.0, 3: 0.5}, {0: 0.8, 1: 0.81, 2: 0.79})
  assert list(c.diffs) == pytest.approx([0.03, 0.03])
  assert list(c.reference) == [0.8, 0.81]


def test_holm_turns_a_lone_chance_difference_inconclusive():
  """Among many comparisons, one whose raw CI excludes 0 but whose
  Holm-adjusted p does not is inconclusive; a strong one stays decisive;
  the result matches Holm applied by hand."""
  from mtljax.analysis import stats as st
  rng = np.random.default_rng(0)
  comps = [rules.Comparison(f"m{k}", list(rng.normal(0, 0.02, 5)),
                            [0.8] * 5) for k in range(19)]
  weak = [0.011, 0.019, 0.008, 0.015, 0.022]     # raw p ~ 0.003
  comps.append(rules.Comparison("weak", weak, [0.8] * 5))
  comps.append(rules.Comparison("strong", [-0.2, -0.21, -0.19, -0.2, -0.205],
                                [0.8] * 5))
  raw = [rules.judge(c) for c in comps]
  assert raw[-2]["outcome"] == "favours" and raw[-1]["outcome"] == "against"
  adj = rules.holm_adjust(raw)
  p = [float(sp_stats.ttest_1samp(c.diffs, 0).pvalue) for c in comps]
  np.testing.assert_allclose([j["p_holm"] for j in adj], st.holm(p))
  assert adj[-1]["outcome"] == "against"
  assert st.holm(p)[-2] >= 0.05 and adj[-2]["outcome"] == "inconclusive"
  v = rules.verdict_none_against("C7", comps)
  assert v["verdict"] == "not supported"


def test_equivalence_comes_before_a_difference_inside_the_margin():
  """A tiny but consistent difference (t-test p < 0.05) inside the ±0.01
  margin is "equivalent": it does not matter (rule 2 before 3)."""
  d = [0.002, 0.0021, 0.0019, 0.002, 0.0022, 0.0018]
  assert rules._p_diff(d) < 1e-5
  j = rules.judge(Comparison("x", d, REF))
  assert j["outcome"] == "equivalent"


def test_identical_arms_are_inconclusive_not_equivalent():
  j = rules.judge(Comparison("x", [0.0] * 5, REF[:5]))
  assert j["outcome"] == "inconclusive" and "same networks" in j["rule"]
  assert j["excluded"]


def test_a_control_reference_at_the_floor_makes_the_contrast_inconclusive():
  shared = {s: 0.05 + 0.001 * s for s in range(5)}
  control = {s: -0.1 for s in range(5)}
  ok = rules.contrast("c", shared, control, {s: 0.8 for s in range(5)},
                      control_reference={s: 0.8 for s in range(5)})
  floor = rules.contrast("c", shared, control, {s: 0.8 for s in range(5)},
                         control_reference={s: 0.51 for s in range(5)})
  assert rules.judge(ok)["outcome"] == "favours"
  assert rules.judge(floor)["outcome"] == "inconclusive"


def test_none_against_needs_every_open_comparison_decisive():
  good = Comparison("a", [0.03, 0.04, 0.035, 0.05, 0.045], REF[:5])
  wide = Comparison("b", [0.05, -0.06, 0.04, -0.05, 0.06], REF[:5])
  floor = Comparison("c", [0.05, -0.06, 0.04, -0.05, 0.06], [0.5] * 5)
  assert rules.verdict_none_against("C7", [good])["verdict"] == "supported"
  # A comparison at the floor is set aside; a wide one blocks support.
  assert rules.verdict_none_against("C7", [good, floor])["verdict"] == (
      "supported")
  assert rules.verdict_none_against("C7", [good, wide])["verdict"] == (
      "inconclusive")
  bad = Comparison("d", [-0.03, -0.04, -0.035, -0.05, -0.045], REF[:5])
  assert rules.verdict_none_against("C7", [good, bad])["verdict"] == (
      "not supported")
