"""Host-side masked metrics against sklearn and direct numpy definitions."""

import numpy as np
import pytest
from sklearn import metrics as skm

from mtljax.tasks import metrics


def random_data(seed, r=None, n=300, t=4, p_obs=0.7, levels=7):
  """Logits with many ties (few distinct levels), labels, a random mask.

  Labels under mask=False are set to -1, so a metric that reads them fails.
  """
  rng = np.random.default_rng(seed)
  lead = () if r is None else (r,)
  logits = rng.integers(-levels // 2, levels // 2 + 1,
                        lead + (n, t)).astype(np.float64) * 0.7
  labels = (rng.random(lead + (n, t)) < 0.3).astype(np.float32)
  mask = rng.random(lead + (n, t)) < p_obs
  labels = np.where(mask, labels, -1.0)
  return logits, labels, mask


def per_task_sklearn(fn, logits, labels, mask):
  out = []
  for j in range(logits.shape[-1]):
    m = mask[:, j]
    out.append(fn(labels[m, j], logits[m, j]))
  return np.asarray(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("levels", [3, 7, 1000])
def test_auc_and_ap_match_sklearn(seed, levels):
  logits, labels, mask = random_data(seed, levels=levels)
  np.testing.assert_allclose(
      metrics.masked_roc_auc(logits, labels, mask),
      per_task_sklearn(skm.roc_auc_score, logits, labels, mask), atol=1e-12)
  np.testing.assert_allclose(
      metrics.masked_average_precision(logits, labels, mask),
      per_task_sklearn(skm.average_precision_score, logits, labels, mask),
      atol=1e-12)


def test_all_tied_scores():
  # One tie group: AUC is 1/2 and AP is the positive rate (sklearn agrees).
  labels = np.array([[1], [0], [0], [1], [0]], np.float32)
  logits = np.zeros_like(labels)
  mask = np.ones_like(labels, bool)
  assert metrics.masked_roc_auc(logits, labels, mask)[0] == pytest.approx(0.5)
  assert metrics.masked_average_precision(
      logits, labels, mask)[0] == pytest.approx(0.4)


def test_undefined_tasks_are_nan():
  logits, labels, mask = random_data(3, t=4)
  labels[:, 1] = 0.0               # task 1: no positives
  labels[:, 2] = 1.0               # task 2: no negatives
  mask[:, 3] = False               # task 3: nothing observed
  auc = metrics.masked_roc_auc(logits, labels, mask)
  ap = metrics.masked_average_precision(logits, labels, mask)
  acc = metrics.masked_accuracy(logits, labels, mask)
  bce = metrics.masked_bce(logits, labels, mask)
  assert np.isfinite(auc[0]) and np.isnan(auc[1:]).all()
  # AP is defined without negatives (all positives: AP = 1).
  assert np.isnan(ap[[1, 3]]).all() and ap[2] == pytest.approx(1.0)
  assert np.isfinite(acc[:3]).all() and np.isnan(acc[3])
  assert np.isfinite(bce[:3]).all() and np.isnan(bce[3])
  d = metrics.task_metrics(logits, labels, mask, ["a", "b", "c", "d"])
  assert np.isnan(d["per_task"]["b"]["auc"])
  # The mean skips NaN tasks rather than becoming NaN.
  assert d["mean"]["auc"] == pytest.approx(auc[0])


def test_nan_score_on_observed_entry_gives_nan():
  logits, labels, mask = random_data(4)
  logits[np.argmax(mask[:, 0]), 0] = np.nan
  logits[~mask[:, 1], 1] = np.nan  # unobserved NaNs are harmless
  auc = metrics.masked_roc_auc(logits, labels, mask)
  assert np.isnan(auc[0]) and np.isfinite(auc[1])


def test_accuracy_and_bce_match_numpy():
  logits, labels, mask = random_data(5, levels=1000)
  logits = logits * 20.0           # large |logits|: the stable form matters
  acc, bce = [], []
  for j in range(logits.shape[1]):
    m = mask[:, j]
    z, y = logits[m, j], labels[m, j]
    acc.append(np.mean((z > 0) == (y == 1)))
    # -[y log σ(z) + (1-y) log(1-σ(z))] via logaddexp, no overflow.
    bce.append(np.mean(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)))
  np.testing.assert_allclose(metrics.masked_accuracy(logits, labels, mask), acc,
                             atol=1e-12)
  np.testing.assert_allclose(metrics.masked_bce(logits, labels, mask), bce,
                             rtol=1e-10)


def test_batched_equals_per_run():
  names = ["a", "b", "c"]
  logits, _, _ = random_data(6, r=3, t=3)
  _, labels, mask = random_data(7, t=3)  # shared labels and mask broadcast
  batched = metrics.task_metrics_batched(logits, labels, mask, names)
  assert len(batched) == 3
  for r in range(3):
    single = metrics.task_metrics(logits[r], labels, mask, names)
    assert batched[r] == single
  # A runs axis on labels and mask too.
  logits, labels, mask = random_data(8, r=2, t=3)
  batched = metrics.task_metrics_batched(logits, labels, mask, names)
  for r in range(2):
    assert batched[r] == metrics.task_metrics(logits[r], labels[r], mask[r],
                                              names)


def test_task_metrics_shape_errors():
  logits, labels, mask = random_data(9, t=3)
  with pytest.raises(ValueError, match="task names"):
    metrics.task_metrics(logits, labels, mask, ["a", "b"])
  with pytest.raises(ValueError, match="batched"):
    metrics.task_metrics(logits[None], labels, mask, ["a", "b", "c"])
  with pytest.raises(ValueError, match="bool"):
    metrics.masked_roc_auc(logits, labels, mask.astype(int))
