"""Host-side (numpy) metrics of multiclass, regression and mixed-type tasks.

The multiclass and regression counterparts of the binary metrics in
`metrics.py`, with the same conventions (float64 numpy, any leading axes such
as a runs axis R, labels under mask=False ignored, NaN where a metric is
undefined), and the metrics of a typed task list (`mtljax.tasks.types`) from
one [R, N, O] output array::

    m = masked_multiclass_metrics(logits_nk, labels_n, mask_n)  # acc, top5,..
    m = masked_regression_metrics(pred_n, target_n, mask_n)     # r2, mse, mae
    ds = typed_metrics_batched(outputs_rno, labels, mask, tasks)  # list of R
    d = typed_metrics(outputs_no, labels, mask, tasks)

Binary tasks go through `metrics.py`'s functions, so all-binary results equal
`metrics.task_metrics_batched`. The public names here are also importable from
`mtljax.tasks.metrics`.
"""

from __future__ import annotations

import numpy as np

from mtljax.tasks import types as types_lib
from mtljax.tasks.metrics import _all_metrics
from mtljax.tasks.metrics import _nanmean_or_nan


def _prepare_rows(values, labels, mask, what: str, trailing: int):
  """Broadcasts labels and mask to the example shape [..., N] of `values`.

  Args:
    values: [..., N] (trailing=0) or [..., N, K] (trailing=1) array.
    labels: broadcastable to the example shape.
    mask: bool, broadcastable to the example shape.
    what: the function's name, for messages.
    trailing: how many per-example axes `values` has after N.

  Returns:
    float64 values, float64 labels with 0 where unobserved, bool mask.
  """
  values = np.asarray(values, dtype=np.float64)
  mask = np.asarray(mask)
  if values.ndim < 1 + trailing:
    want = "[..., N, K]" if trailing else "[..., N]"
    raise ValueError(f"{what}: expected {want} values; got shape "
                     f"{values.shape}")
  if mask.dtype != np.bool_:
    raise ValueError(f"mask must be bool; got dtype {mask.dtype}")
  shape = values.shape[:values.ndim - trailing]
  labels = np.asarray(labels)
  try:
    labels = np.broadcast_to(labels, shape)
    mask = np.broadcast_to(mask, shape)
  except ValueError as e:
    raise ValueError(f"{what}: labels {labels.shape} and mask {mask.shape} do "
                     f"not broadcast to the example shape {shape}") from e
  # np.where, not a product: garbage under mask=False (NaN, inf, 1e300) must
  # not leak into sums as NaN or inf * 0.
  labels = np.where(mask, labels.astype(np.float64), 0.0)
  return values, labels, mask


def _nan_where_empty(value, count, bad=None):
  """value where count > 0 (and not bad), else NaN."""
  undefined = count == 0 if bad is None else (count == 0) | bad
  return np.where(undefined, np.nan, value)


def masked_multiclass_metrics(logits, labels, mask) -> dict[str, np.ndarray]:
  """Accuracy, top-5 accuracy, macro F1 and cross-entropy over observed labels.

  Conventions:
    * acc: the prediction is `np.argmax` (ties go to the lowest class index).
    * top5: the label's rank among the K logits, ties broken by lower index
      first (the order argmax uses, so a top-1 hit is exactly an acc hit), is
      < 5. Only returned for K > 5 (for K <= 5 it is always 1). With tied
      logits this may differ from sklearn's `top_k_accuracy_score`, which
      breaks ties towards the higher index.
    * macro_f1: the mean of per-class F1 = 2·TP / (2·TP + FP + FN) over the
      classes that occur among the observed labels or the predictions. A
      class with neither support nor predictions is left out rather than
      counted as F1 = 0: an eval split that happens to lack a rare class
      should not cap a perfect classifier below 1. This equals sklearn's
      `f1_score(average="macro")` with its default labels (those present in
      y_true or y_pred), and `f1_score(..., labels=range(K),
      zero_division=np.nan)`; it is higher than `labels=range(K),
      zero_division=0` whenever a class is absent from both.
    * loss: mean softmax cross-entropy, −log_softmax(z)[y], with a
      max-shifted log-sum-exp in float64 (no overflow for any finite logits).

  Args:
    logits: [..., N, K] logits (K >= 2 classes).
    labels: [..., N] class indices 0..K-1 (float or int), broadcastable to
      logits.shape[:-1]; values under mask=False are ignored (-1, NaN, ...).
    mask: [..., N] bool, broadcastable likewise.

  Returns:
    {"acc", "top5" (K > 5 only), "macro_f1", "loss"}, each [...] float64.
    All are NaN where no label is observed, or where an observed example
    has a NaN logit.

  Raises:
    ValueError: bad shapes, a non-bool mask, or an observed label that is not
      an integer in [0, K).
  """
  what = "masked_multiclass_metrics"
  logits, y, mask = _prepare_rows(logits, labels, mask, what, trailing=1)
  k = logits.shape[-1]
  if k < 2:
    raise ValueError(f"{what}: needs K >= 2 classes; got logits of shape "
                     f"{logits.shape}")
  bad_label = mask & ((y != np.floor(y)) | (y < 0) | (y >= k))
  if bad_label.any():
    raise ValueError(f"{what}: {int(bad_label.sum())} observed label(s) are "
                     f"not class indices in [0, {k}); e.g. "
                     f"{y[bad_label][0]!r}")
  y = y.astype(np.int64)
  count = mask.sum(axis=-1)
  invalid = (np.isnan(logits).any(axis=-1) & mask).any(axis=-1)

  z_y = np.take_along_axis(logits, y[..., None], axis=-1)      # [..., N, 1]
  pred = np.argmax(logits, axis=-1)                             # [..., N]
  hit = mask & (pred == y)
  out = {}
  with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
    out["acc"] = _nan_where_empty(hit.sum(axis=-1) / count, count, invalid)
    if k > 5:
      # Rank of the label's logit: classes strictly above it, plus tied
      # classes of lower index (np.argmax's order), without a sort.
      above = logits > z_y
      tied_before = (logits == z_y) & (np.arange(k) < y[..., None])
      rank = (above | tied_before).sum(axis=-1)
      top5 = (mask & (rank < 5)).sum(axis=-1) / count
      out["top5"] = _nan_where_empty(top5, count, invalid)

    # Per-class counts by one bincount over (leading index, class), so the
    # cost is O(N) per run rather than an [..., N, K] one-hot.
    lead = count.shape
    n_lead = int(np.prod(lead, dtype=np.int64))
    base = (np.arange(n_lead).reshape(lead + (1,)) * k)
    base = np.broadcast_to(base, mask.shape)

    def per_class(cls, where):
      flat = (base + cls)[where]
      return np.bincount(flat, minlength=n_lead * k).reshape(lead + (k,))

    tp = per_class(y, hit)
    support = per_class(y, mask)
    predicted = per_class(pred, mask)
    denom = support + predicted            # = 2·TP + FP + FN
    present = denom > 0
    f1 = np.where(present, 2.0 * tp / np.maximum(denom, 1), 0.0)
    macro = f1.sum(axis=-1) / present.sum(axis=-1)
    out["macro_f1"] = _nan_where_empty(macro, count, invalid)

    # Stable log-softmax: shift by the row max, so exp never overflows.
    zmax = logits.max(axis=-1, keepdims=True)
    lse = zmax[..., 0] + np.log(np.exp(logits - zmax).sum(axis=-1))
    ce = lse - z_y[..., 0]
    loss = np.where(mask, ce, 0.0).sum(axis=-1) / count
    out["loss"] = _nan_where_empty(loss, count, invalid)
  return out


def masked_regression_metrics(pred, target, mask) -> dict[str, np.ndarray]:
  """R², mean squared error and mean absolute error over observed targets.

  R² = 1 − SSE / SST with SST = Σ (y − ȳ)² about the mean of the observed
  targets (sklearn's `r2_score`). Where SST = 0 (all observed targets equal,
  including a single observed target) R² is undefined and NaN here, where
  sklearn returns 1.0 or 0.0 by default; "all equal" is tested directly
  (max == min) because ȳ computed in floating point may differ from the
  common value and make SST a tiny positive number instead of 0.

  Args:
    pred: [..., N] predictions.
    target: [..., N] targets, broadcastable to pred; values under mask=False
      are ignored (NaN, ...).
    mask: [..., N] bool, broadcastable to pred.

  Returns:
    {"r2", "mse", "mae"}, each [...] float64; NaN where no target is
    observed. A NaN prediction on an observed entry makes all three NaN.
  """
  pred, y, mask = _prepare_rows(pred, target, mask, "masked_regression_metrics",
                                trailing=0)
  count = mask.sum(axis=-1)
  with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
    err = np.where(mask, pred - y, 0.0)
    sse = (err * err).sum(axis=-1)
    mse = sse / count
    mae = np.abs(err).sum(axis=-1) / count
    mean = y.sum(axis=-1, keepdims=True) / count[..., None]
    dev = np.where(mask, y - mean, 0.0)
    sst = (dev * dev).sum(axis=-1)
    hi = np.where(mask, y, -np.inf).max(axis=-1)
    lo = np.where(mask, y, np.inf).min(axis=-1)
    r2 = 1.0 - sse / sst
  return {"r2": np.where((count == 0) | (hi == lo), np.nan, r2),
          "mse": _nan_where_empty(mse, count),
          "mae": _nan_where_empty(mae, count)}


def _typed_per_metric(outputs, labels, mask, tasks) -> list[dict]:
  """{metric: [R] array} for each task, each type group in one call.

  Args:
    outputs: [R, N, O] float array.
    labels, mask: [R, N, T] (or broadcastable, e.g. [N, T]).
    tasks: the T tasks.
  """
  offsets = types_lib.output_offsets(tasks)
  num_tasks = len(tasks)
  result: list[dict] = [None] * num_tasks

  binary = [t for t, task in enumerate(tasks) if task.type == "binary"]
  if binary:
    if len(binary) == num_tasks:
      # All binary: the very arrays task_metrics_batched would get, so the
      # results are bit-identical to it (a gathered copy could change the
      # summation order for a non-contiguous input).
      per = _all_metrics(outputs, labels, mask)
    else:
      cols = offsets[binary]
      per = _all_metrics(outputs[..., cols], labels[..., binary],
                         mask[..., binary])
    for j, t in enumerate(binary):
      result[t] = {m: v[..., j] for m, v in per.items()}

  by_k: dict[int, list[int]] = {}
  for t, task in enumerate(tasks):
    if task.type == "multiclass":
      by_k.setdefault(task.num_classes, []).append(t)
  for k, idx in by_k.items():
    cols = offsets[idx][:, None] + np.arange(k)                # [J, K]
    # [R, N, J, K] -> [R, J, N, K]: each task's examples on the N axis.
    logits = np.moveaxis(outputs[..., cols], -3, -2)
    per = masked_multiclass_metrics(logits,
                                    np.swapaxes(labels[..., idx], -1, -2),
                                    np.swapaxes(mask[..., idx], -1, -2))
    for j, t in enumerate(idx):
      result[t] = {m: v[..., j] for m, v in per.items()}

  regression = [t for t, task in enumerate(tasks) if task.type == "regression"]
  if regression:
    per = masked_regression_metrics(
        np.swapaxes(outputs[..., offsets[regression]], -1, -2),
        np.swapaxes(labels[..., regression], -1, -2),
        np.swapaxes(mask[..., regression], -1, -2))
    for j, t in enumerate(regression):
      result[t] = {m: v[..., j] for m, v in per.items()}

  # Exactly each task's declared metrics, in its declared order.
  return [{m: result[t][m] for m in task.metrics}
          for t, task in enumerate(tasks)]


def _typed_as_dict(per_task: list[dict], tasks, r: int) -> dict:
  """The typed_metrics dict of run r from _typed_per_metric's arrays."""
  out = {task.name: {m: float(v[r]) for m, v in per_task[t].items()}
         for t, task in enumerate(tasks)}
  names: list[str] = []
  for task in tasks:
    names += [m for m in task.metrics if m not in names]
  mean = {m: _nanmean_or_nan([out[task.name][m] for task in tasks
                              if m in out[task.name]])
          for m in names}
  mean[types_lib.PRIMARY] = _nanmean_or_nan(
      [out[task.name][task.primary_metric] for task in tasks])
  return {"per_task": out, "mean": mean}


def typed_metrics_batched(outputs, labels, mask, tasks) -> list[dict]:
  """Each task's own metrics for each run of [R, N, O] outputs.

  Every type group is computed in one vectorised call: all binary tasks
  together (the functions above), multiclass tasks stacked per K, and all
  regression tasks stacked.

  Args:
    outputs: [R, N, O] outputs, O = Σ task.num_outputs; task t's are columns
      `output_offsets(tasks)[t]:output_offsets(tasks)[t + 1]` (binary logit,
      K multiclass logits, regression prediction).
    labels: [N, T] or [R, N, T] float labels: 0/1, class indices or targets
      (ignored where mask is False).
    mask: [N, T] or [R, N, T] bool, which labels are observed.
    tasks: the T `types.Task` objects, in column order.

  Returns:
    A list of R dicts {"per_task": {name: {metric: float}} with exactly
    `task.metrics` per task, "mean": {metric: mean over the tasks that have
    it, skipping NaN, ..., "primary": mean over tasks of each task's primary
    metric, skipping NaN}}. For all-binary tasks this equals
    `task_metrics_batched` plus "primary" (= the mean AUC).
  """
  tasks = types_lib.check_tasks(tasks)
  outputs = np.asarray(outputs)
  num_outputs = int(types_lib.output_offsets(tasks)[-1])
  if outputs.ndim != 3:
    raise ValueError(f"typed_metrics_batched takes [R, N, O] outputs; got "
                     f"{outputs.shape}")
  if outputs.shape[-1] != num_outputs:
    raise ValueError(f"{len(tasks)} tasks have {num_outputs} outputs; got "
                     f"{outputs.shape[-1]} output columns")
  labels, mask = np.asarray(labels), np.asarray(mask)
  for name, a in (("labels", labels), ("mask", mask)):
    if a.ndim not in (2, 3) or a.shape[-1] != len(tasks):
      raise ValueError(f"{name} must have shape [N, {len(tasks)}] or "
                       f"[R, N, {len(tasks)}]; got {a.shape}")
  per_task = _typed_per_metric(outputs, labels, mask, tasks)
  return [_typed_as_dict(per_task, tasks, r) for r in range(outputs.shape[0])]


def typed_metrics(outputs, labels, mask, tasks) -> dict:
  """`typed_metrics_batched` for one run.

  Args:
    outputs: [N, O] outputs.
    labels: [N, T] labels.
    mask: [N, T] bool.
    tasks: the T tasks.

  Returns:
    The typed_metrics_batched dict of the single run.
  """
  outputs = np.asarray(outputs)
  if outputs.ndim != 2:
    raise ValueError(f"typed_metrics takes [N, O] outputs; got "
                     f"{outputs.shape} (use typed_metrics_batched for a "
                     "leading runs axis)")
  return typed_metrics_batched(outputs[None], labels, mask, tasks)[0]
