"""Small-sample statistics against scipy and hand-computed values."""

import numpy as np
import pytest
from scipy import stats as sp_stats

from mtljax.analysis import stats


def test_mean_ci_matches_scipy():
  x = np.array([0.81, 0.84, 0.79, 0.86, 0.83])
  mean, lo, hi, n = stats.mean_ci(x)
  want = sp_stats.t.interval(0.95, df=4, loc=x.mean(), scale=sp_stats.sem(x))
  assert n == 5 and mean == pytest.approx(x.mean())
  assert (lo, hi) == pytest.approx(want, abs=1e-12)
  _, lo90, hi90, _ = stats.mean_ci(x, confidence=0.9)
  assert lo < lo90 < hi90 < hi


def test_mean_ci_drops_nan_and_degenerate_cases():
  mean, lo, hi, n = stats.mean_ci([0.5, np.nan, 0.7])
  want = sp_stats.t.interval(0.95, df=1, loc=0.6,
                             scale=sp_stats.sem([0.5, 0.7]))
  assert n == 2 and mean == pytest.approx(0.6)
  assert (lo, hi) == pytest.approx(want)
  mean, lo, hi, n = stats.mean_ci([0.4])
  assert (mean, n) == (0.4, 1) and np.isnan(lo) and np.isnan(hi)
  assert stats.mean_ci([0.3, 0.3, 0.3])[:3] == (0.3, 0.3, 0.3)
  assert np.isnan(stats.mean_ci([])[0]) and stats.mean_ci([np.nan])[3] == 0


def test_paired_diff_matches_ttest_rel():
  rng = np.random.default_rng(0)
  b = rng.normal(0.8, 0.02, 6)
  a = b + rng.normal(0.01, 0.01, 6)
  d = stats.paired_diff(a, b)
  assert d["n"] == 6
  assert d["mean_diff"] == pytest.approx(np.mean(a - b))
  assert d["p_value"] == pytest.approx(sp_stats.ttest_rel(a, b).pvalue)
  assert d["p_wilcoxon"] == pytest.approx(sp_stats.wilcoxon(a - b).pvalue)
  want = sp_stats.t.interval(0.95, df=5, loc=np.mean(a - b),
                             scale=sp_stats.sem(a - b))
  assert (d["lo"], d["hi"]) == pytest.approx(want)
  assert d["wins"] + d["losses"] + d["ties"] == 6
  assert d["wins"] == int(np.sum(a > b))


def test_paired_diff_nan_pairs_and_small_n():
  d = stats.paired_diff([0.9, np.nan, 0.8, 0.7], [0.85, 0.8, np.nan, 0.6])
  assert d["n"] == 2 and d["mean_diff"] == pytest.approx(0.075)
  assert np.isnan(d["p_wilcoxon"])  # n < 6
  const = stats.paired_diff([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])
  assert const["p_value"] == 0.0 and const["lo"] == pytest.approx(0.1)
  same = stats.paired_diff([0.9, 0.8], [0.9, 0.8])
  assert same["p_value"] == 1.0 and same["ties"] == 2
  with pytest.raises(ValueError, match="equal lengths"):
    stats.paired_diff([1.0, 2.0], [1.0])


def test_holm_hand_computed():
  # Sorted p: 0.01, 0.02, 0.03, 0.04 -> ×4, ×3, ×2, ×1 = 0.04, 0.06, 0.06,
  # 0.04 -> running max 0.04, 0.06, 0.06, 0.06.
  got = stats.holm([0.03, 0.01, 0.04, 0.02])
  np.testing.assert_allclose(got, [0.06, 0.04, 0.06, 0.06])
  # Capped at 1; NaN kept and not counted in the family (m = 2).
  got = stats.holm([0.6, np.nan, 0.01])
  np.testing.assert_allclose(got, [0.6, np.nan, 0.02])
  assert stats.holm([0.9, 0.8])[0] == 1.0
  assert np.isnan(stats.holm([np.nan])).all()


def test_relative_improvement_signs():
  # Higher is better: +10% and -10% average to 0; +10% alone is +10.
  assert stats.relative_improvement([0.88, 0.72], [0.8, 0.8]) == pytest.approx(0)
  assert stats.relative_improvement([0.88], [0.8]) == pytest.approx(10.0)
  # Lower is better (a loss): a lower MTL loss is an improvement (positive).
  assert stats.relative_improvement([0.4], [0.5], False) == pytest.approx(20.0)
  assert stats.relative_improvement([0.6], [0.5], [False]) == pytest.approx(-20)
  mixed = stats.relative_improvement([0.9, 0.4], [0.8, 0.5], [True, False])
  assert mixed == pytest.approx((12.5 + 20.0) / 2)
  # NaN and zero baselines are skipped.
  assert stats.relative_improvement([0.9, np.nan], [0.8, 0.7]) == pytest.approx(
      12.5)
  assert np.isnan(stats.relative_improvement([0.9], [0.0]))


def test_relative_improvement_is_signed_by_direction_not_by_the_baseline():
  # An R² from -0.5 to 0 is an improvement of 100 % of |baseline|.
  assert stats.relative_improvement([0.0], [-0.5], [True]) == 100.0
  assert stats.relative_improvement([-1.0], [-0.5], [True]) == -100.0
  # Lower is better: a loss from 2 to 1 is +50 %.
  assert stats.relative_improvement([1.0], [2.0], [False]) == 50.0
