"""Small-sample statistics for seed-level MTL vs STL comparisons.

A study has few seeds (3-10), so everything here is exact small-sample
inference: Student-t intervals, paired t-tests and Wilcoxon signed-rank tests
on per-seed differences. MTL and STL runs with the same seed share data order
and label masks, so their results are paired; pairing removes the shared
seed-to-seed variance and is the right test (an unpaired test would be both
less powerful and, with correlated runs, mis-calibrated)::

    mean, lo, hi, n = mean_ci(test_auc_per_seed)
    d = paired_diff(mtl_auc_per_seed, stl_auc_per_seed)   # MTL − STL
    dp = relative_improvement(mtl_per_task, stl_per_task, [True] * T)
    p_adj = holm([d1["p_value"], d2["p_value"]])

NaN values (e.g. a metric undefined for a degenerate split) are dropped, and
the returned n is the number of values actually used, so a reader sees it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats as sp_stats

# Wilcoxon with n < 6 cannot reach p < 0.05 two-sided, so it is not reported.
WILCOXON_MIN_N = 6


def mean_ci(values: Sequence[float], confidence: float = 0.95
            ) -> tuple[float, float, float, int]:
  """Mean and Student-t confidence interval of the (non-NaN) values.

  Args:
    values: per-seed values.
    confidence: two-sided confidence level.

  Returns:
    (mean, lo, hi, n). With n < 2 there is no variance estimate, so lo = hi =
    NaN (the mean is still given when n = 1). With zero spread, lo = hi = mean.
  """
  x = np.asarray(values, dtype=np.float64).ravel()
  x = x[~np.isnan(x)]
  n = int(x.size)
  if n == 0:
    return float("nan"), float("nan"), float("nan"), 0
  mean = float(x.mean())
  if n < 2:
    return mean, float("nan"), float("nan"), n
  sem = float(x.std(ddof=1) / np.sqrt(n))
  if sem == 0.0:
    return mean, mean, mean, n
  half = float(sp_stats.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * sem
  return mean, mean - half, mean + half, n


def paired_diff(a: Sequence[float], b: Sequence[float],
                confidence: float = 0.95) -> dict:
  """Paired comparison of a − b (e.g. MTL − STL), element i paired with i.

  Args:
    a: per-seed values of the treatment, ordered by seed.
    b: per-seed values of the baseline, same seed order and length.
    confidence: level of the CI on the mean difference.

  Returns:
    dict with mean_diff, lo, hi (t-interval on the differences), p_value
    (two-sided paired t-test), p_wilcoxon (two-sided Wilcoxon signed-rank on
    the differences; NaN when n < 6), n (pairs with both values present),
    wins (pairs with a > b), losses (a < b) and ties.
  """
  a = np.asarray(a, dtype=np.float64).ravel()
  b = np.asarray(b, dtype=np.float64).ravel()
  if a.shape != b.shape:
    raise ValueError(f"paired_diff needs equal lengths; got {a.size} and "
                     f"{b.size}")
  keep = ~(np.isnan(a) | np.isnan(b))
  a, b = a[keep], b[keep]
  d = a - b
  n = int(d.size)
  mean, lo, hi, _ = mean_ci(d, confidence)
  out = {"mean_diff": mean, "lo": lo, "hi": hi, "p_value": float("nan"),
         "p_wilcoxon": float("nan"), "n": n, "wins": int((d > 0).sum()),
         "losses": int((d < 0).sum()), "ties": int((d == 0).sum())}
  if n >= 2:
    scale = float(np.abs(d).max())
    if np.ptp(d) <= 1e-9 * scale or scale == 0.0:
      # Zero spread (up to float rounding, e.g. 0.9−0.8 vs 0.8−0.7): the t
      # statistic is 0/0 or ±inf and scipy warns of catastrophic cancellation.
      # The limits are p=1 (no difference) and p=0 (a constant one).
      out["p_value"] = 1.0 if scale == 0.0 else 0.0
    else:
      out["p_value"] = float(sp_stats.ttest_rel(a, b).pvalue)
  if n >= WILCOXON_MIN_N:
    if np.all(d == 0):
      out["p_wilcoxon"] = 1.0  # scipy raises on all-zero differences.
    else:
      try:
        out["p_wilcoxon"] = float(sp_stats.wilcoxon(d).pvalue)
      except ValueError:
        pass
  return out


def relative_improvement(m_mtl: Sequence[float], m_stl: Sequence[float],
                         higher_is_better: Sequence[bool] | bool = True
                         ) -> float:
  """Δp in %: mean over tasks of the signed relative change vs a real STL run.

  Δp = (1/T) Σ_t (−1)^{l_t} (M_mtl,t − M_stl,t) / M_stl,t × 100, with l_t = 1
  when lower is better (Maninis et al., 2019). `m_stl` must be a trained STL
  result, not an epoch-0 or untrained baseline (the LibMTL quirk).

  Args:
    m_mtl: [T] (or any shape) metric values of the treatment.
    m_stl: same shape, the baseline's values.
    higher_is_better: bool per entry, or one bool for all.

  Returns:
    Δp in percent. Entries where either value is NaN or the baseline is 0 (the
    ratio is undefined) are skipped; NaN if none remain.
  """
  mtl = np.asarray(m_mtl, dtype=np.float64).ravel()
  stl = np.asarray(m_stl, dtype=np.float64).ravel()
  if mtl.shape != stl.shape:
    raise ValueError(f"relative_improvement: shapes {mtl.shape} and "
                     f"{stl.shape} differ")
  hib = np.broadcast_to(np.asarray(higher_is_better, dtype=bool),
                        np.shape(m_mtl)).ravel()
  sign = np.where(hib, 1.0, -1.0)
  ok = ~(np.isnan(mtl) | np.isnan(stl)) & (stl != 0)
  if not ok.any():
    return float("nan")
  # |baseline|: a change towards "better" is positive whatever the baseline's
  # sign (an R² from -0.5 to 0 is an improvement, not -100 %).
  rel = sign[ok] * (mtl[ok] - stl[ok]) / np.abs(stl[ok])
  return float(rel.mean() * 100.0)


def holm(p_values: Sequence[float]) -> np.ndarray:
  """Holm-Bonferroni adjusted p-values (step-down, family-wise error rate).

  Args:
    p_values: m raw p-values; NaN entries are kept NaN and are not counted in
      the family size.

  Returns:
    Adjusted p-values in the input order: reject hypothesis i at level α iff
    adjusted[i] ≤ α. Monotone in the raw p-values and capped at 1.
  """
  p = np.asarray(p_values, dtype=np.float64).ravel()
  out = np.full(p.shape, np.nan)
  valid = np.flatnonzero(~np.isnan(p))
  m = valid.size
  if m == 0:
    return out
  order = valid[np.argsort(p[valid], kind="stable")]
  adj = (m - np.arange(m)) * p[order]
  adj = np.minimum(np.maximum.accumulate(adj), 1.0)
  out[order] = adj
  return out
