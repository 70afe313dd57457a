"""Host-side (numpy) evaluation metrics for masked multi-label, multi-task data.

Evaluation logits are pulled to the host once per eval, so these functions use
numpy in float64 rather than jax: exact tie handling needs a sort, and float64
keeps ranks and cumulative counts exact for any realistic N.

Every function takes arrays of shape [..., N, T] (examples N, tasks T, with any
number of leading axes such as a runs axis R) and returns [..., T]::

    auc = masked_roc_auc(logits, labels, mask)          # [T]
    auc = masked_roc_auc(logits_rnt, labels, mask)      # [R, T]; labels and
                                                        # mask broadcast
    d = task_metrics(logits, labels, mask, ["car", "person"])
    ds = task_metrics_batched(logits_rnt, labels, mask, names)  # list of R

Only entries with mask=True are observed; values of `labels` under mask=False
are ignored (they may be anything, e.g. -1). A task whose metric is undefined
(no observed positives / negatives / labels) gets NaN, never a silent 0.

This module holds the binary (multi-label) metrics. The multiclass, regression
and typed (mixed task types) metrics live in `typed_metrics.py`; their public
names (`masked_multiclass_metrics`, `masked_regression_metrics`,
`typed_metrics_batched`, `typed_metrics`) are re-exported here, imported on
first access because typed_metrics.py imports this module.
"""

from __future__ import annotations

import importlib
from typing import Sequence

import numpy as np

METRICS = ("auc", "ap", "acc", "loss")
# Direction of each metric, used for LR selection and Δp (loss: lower better).
HIGHER_IS_BETTER = {"auc": True, "ap": True, "acc": True, "loss": False}


def _prepare(scores, labels, mask):
  """Broadcasts to one [..., N, T] shape; returns float64, bool, bool arrays."""
  scores = np.asarray(scores, dtype=np.float64)
  labels = np.asarray(labels)
  mask = np.asarray(mask)
  if scores.ndim < 2:
    raise ValueError(f"scores/logits must have shape [..., N, T]; got "
                     f"{scores.shape}")
  if mask.dtype != np.bool_:
    raise ValueError(f"mask must be bool; got dtype {mask.dtype}")
  try:
    labels = np.broadcast_to(labels, scores.shape)
    mask = np.broadcast_to(mask, scores.shape)
  except ValueError as e:
    raise ValueError(f"labels {labels.shape} and mask {mask.shape} do not "
                     f"broadcast to scores {scores.shape}") from e
  # Labels under mask=False may be garbage (-1, NaN); only observed ones count.
  positive = mask & (labels > 0.5)
  return scores, positive, mask


def _sorted_ties(scores, positive, mask):
  """Sorts each task's observed scores ascending and finds tie groups.

  Unobserved entries are sorted after every observed one (the primary sort key
  is ~mask), so in each row the first n_obs positions are the observed entries.

  Returns:
    pos: [..., T, N] bool, positive flag in sorted order (False if unobserved).
    obs: [..., T, N] bool, observed flag in sorted order.
    start: [..., T, N] int, index of the first element of each element's tie
      group (a run of equal observed scores).
    end: [..., T, N] int, index of the last element of that tie group.
  """
  s = np.swapaxes(scores, -1, -2)  # [..., T, N]: sort along the last axis.
  m = np.swapaxes(mask, -1, -2)
  p = np.swapaxes(positive, -1, -2)
  order = np.lexsort((s, ~m), axis=-1)
  s = np.take_along_axis(s, order, axis=-1)
  m = np.take_along_axis(m, order, axis=-1)
  p = np.take_along_axis(p, order, axis=-1)
  n = s.shape[-1]
  idx = np.broadcast_to(np.arange(n), s.shape)
  # A new group starts where the score or the observed flag changes.
  new = np.ones(s.shape, dtype=bool)
  new[..., 1:] = (s[..., 1:] != s[..., :-1]) | (m[..., 1:] != m[..., :-1])
  last = np.ones(s.shape, dtype=bool)
  last[..., :-1] = new[..., 1:]
  start = np.maximum.accumulate(np.where(new, idx, 0), axis=-1)
  # Reverse running minimum of group-end indices gives each element's end.
  end_marks = np.where(last, idx, n)[..., ::-1]
  end = np.minimum.accumulate(end_marks, axis=-1)[..., ::-1]
  return p, m, start, end


def _invalid_scores(scores, mask):
  """[..., T] bool: a task with a NaN score on an observed entry."""
  return (np.isnan(scores) & mask).any(axis=-2)


def masked_roc_auc(scores, labels, mask) -> np.ndarray:
  """ROC-AUC per task over observed labels, with exact tie handling.

  Uses the Mann-Whitney form with average ranks for tied scores, which equals
  sklearn's `roc_auc_score` (ties count 1/2).

  Args:
    scores: [..., N, T] scores or logits (any monotone transform gives the same
      AUC; passing logits avoids ties created by sigmoid saturation).
    labels: [..., N, T] in {0, 1}, broadcastable to scores.
    mask: [..., N, T] bool, broadcastable to scores.

  Returns:
    [..., T] float64; NaN for a task with no observed positive or no observed
    negative (or a NaN score on an observed entry).
  """
  scores, positive, mask = _prepare(scores, labels, mask)
  pos, obs, start, end = _sorted_ties(scores, positive, mask)
  # 1-based average rank of each tie group, only meaningful where observed.
  avg_rank = (start + end) / 2.0 + 1.0
  n_pos = pos.sum(axis=-1).astype(np.float64)
  n_obs = obs.sum(axis=-1).astype(np.float64)
  n_neg = n_obs - n_pos
  rank_sum = np.where(pos, avg_rank, 0.0).sum(axis=-1)
  with np.errstate(invalid="ignore", divide="ignore"):
    auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
  bad = (n_pos == 0) | (n_neg == 0) | _invalid_scores(scores, mask)
  return np.where(bad, np.nan, auc)


def masked_average_precision(scores, labels, mask) -> np.ndarray:
  """Average precision per task over observed labels (= sklearn's AP).

  AP = Σ_k (R_k − R_{k−1}) P_k over the distinct score thresholds, step-wise
  without interpolation. Each observed positive contributes 1/n_pos times the
  precision at the threshold equal to its own score, where all tied elements
  are counted as predicted positive; this is exactly sklearn's treatment.

  Args:
    scores: [..., N, T] scores or logits.
    labels: [..., N, T] in {0, 1}, broadcastable to scores.
    mask: [..., N, T] bool, broadcastable to scores.

  Returns:
    [..., T] float64; NaN for a task with no observed positive.
  """
  scores, positive, mask = _prepare(scores, labels, mask)
  pos, obs, start, _ = _sorted_ties(scores, positive, mask)
  n_pos = pos.sum(axis=-1, keepdims=True).astype(np.float64)
  n_obs = obs.sum(axis=-1, keepdims=True).astype(np.float64)
  # Positives strictly below each element's tie group (ascending order).
  cum_pos = np.cumsum(pos, axis=-1)
  pos_before = np.where(
      start > 0, np.take_along_axis(cum_pos, np.maximum(start - 1, 0), -1), 0)
  # Predicted positive at threshold = this score: everything from `start` on.
  tp = n_pos - pos_before
  predicted = n_obs - start
  with np.errstate(invalid="ignore", divide="ignore"):
    precision = np.where(pos, tp / np.maximum(predicted, 1.0), 0.0)
    ap = precision.sum(axis=-1) / n_pos[..., 0]
  bad = (n_pos[..., 0] == 0) | _invalid_scores(scores, mask)
  return np.where(bad, np.nan, ap)


def masked_accuracy(logits, labels, mask) -> np.ndarray:
  """Accuracy per task at probability 0.5 (logit > 0), over observed labels.

  Returns:
    [..., T] float64; NaN for a task with no observed label.
  """
  logits, positive, mask = _prepare(logits, labels, mask)
  correct = ((logits > 0) == positive) & mask
  count = mask.sum(axis=-2)
  with np.errstate(invalid="ignore", divide="ignore"):
    acc = correct.sum(axis=-2) / count
  return np.where(count == 0, np.nan, acc)


def masked_bce(logits, labels, mask) -> np.ndarray:
  """Mean logistic loss per task over observed labels, stable for any |logit|.

  L(z, y) = max(z, 0) − z·y + log1p(e^{−|z|}), which never overflows.

  Returns:
    [..., T] float64; NaN for a task with no observed label.
  """
  logits, positive, mask = _prepare(logits, labels, mask)
  y = positive.astype(np.float64)
  elem = (np.maximum(logits, 0.0) - logits * y
          + np.log1p(np.exp(-np.abs(logits))))
  count = mask.sum(axis=-2)
  with np.errstate(invalid="ignore", divide="ignore"):
    loss = np.where(mask, elem, 0.0).sum(axis=-2) / count
  return np.where(count == 0, np.nan, loss)


def _nanmean_or_nan(x: np.ndarray) -> float:
  """Mean over finite entries; NaN (without a warning) if there are none."""
  x = np.asarray(x, dtype=np.float64)
  ok = ~np.isnan(x)
  return float(x[ok].mean()) if ok.any() else float("nan")


def _as_dict(per_metric: dict[str, np.ndarray],
             task_names: Sequence[str]) -> dict:
  """Builds the task_metrics dict from {metric: [T] array}."""
  per_task = {
      name: {k: float(v[t]) for k, v in per_metric.items()}
      for t, name in enumerate(task_names)
  }
  mean = {k: _nanmean_or_nan(v) for k, v in per_metric.items()}
  return {"per_task": per_task, "mean": mean}


def _all_metrics(logits, labels, mask) -> dict[str, np.ndarray]:
  return {
      "auc": masked_roc_auc(logits, labels, mask),
      "ap": masked_average_precision(logits, labels, mask),
      "acc": masked_accuracy(logits, labels, mask),
      "loss": masked_bce(logits, labels, mask),
  }


def task_metrics(logits, labels, mask, task_names: Sequence[str]) -> dict:
  """All metrics per task and their means, as plain python floats.

  Args:
    logits: [N, T] logits.
    labels: [N, T] labels in {0, 1} (ignored where mask is False).
    mask: [N, T] bool.
    task_names: T names, in column order.

  Returns:
    {"per_task": {name: {"auc", "ap", "acc", "loss"}}, "mean": {...}}. A mean
    skips tasks whose metric is NaN (e.g. a task with no positives in this
    split), so one degenerate task does not hide the others; it is NaN only if
    every task is NaN. NaN stays float("nan") here; JSON writers map it to null.
  """
  logits = np.asarray(logits)
  if logits.ndim != 2:
    raise ValueError(f"task_metrics takes [N, T] logits; got {logits.shape} "
                     "(use task_metrics_batched for a leading runs axis)")
  if logits.shape[-1] != len(task_names):
    raise ValueError(f"{len(task_names)} task names for {logits.shape[-1]} "
                     "logit columns")
  return _as_dict(_all_metrics(logits, labels, mask), task_names)


def task_metrics_batched(logits, labels, mask,
                         task_names: Sequence[str]) -> list[dict]:
  """`task_metrics` for each run of [R, N, T] logits, in one vectorised pass.

  Args:
    logits: [R, N, T] logits, e.g. R vmapped runs evaluated on one split.
    labels: [N, T] or [R, N, T] labels (shared labels broadcast).
    mask: [N, T] or [R, N, T] bool.
    task_names: T names.

  Returns:
    A list of R task_metrics dicts.
  """
  logits = np.asarray(logits)
  if logits.ndim != 3:
    raise ValueError(f"task_metrics_batched takes [R, N, T] logits; got "
                     f"{logits.shape}")
  if logits.shape[-1] != len(task_names):
    raise ValueError(f"{len(task_names)} task names for {logits.shape[-1]} "
                     "logit columns")
  per_metric = _all_metrics(logits, labels, mask)  # each [R, T]
  return [_as_dict({k: v[r] for k, v in per_metric.items()}, task_names)
          for r in range(logits.shape[0])]



# ---------------------------------------------------------------------------
# Re-exports of typed_metrics.py. Imported lazily (PEP 562): typed_metrics
# imports this module at its top, so an eager import here would fail whenever
# typed_metrics is the module imported first.

_TYPED = ("masked_multiclass_metrics", "masked_regression_metrics",
          "typed_metrics_batched", "typed_metrics")


def __getattr__(name: str):
  if name not in _TYPED:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module("mtljax.tasks.typed_metrics"), name)
  globals()[name] = value  # later accesses skip __getattr__
  return value


def __dir__():
  return sorted(set(globals()) | set(_TYPED))
