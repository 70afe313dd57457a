"""Host-side masked metrics against sklearn and direct numpy definitions."""

import numpy as np
import pytest
from sklearn import metrics as skm

from mtljax.tasks import metrics
from mtljax.tasks import types


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


# ---------------------------------------------------------------------------
# Multiclass, regression and typed task lists.


def garbage_like(rng, shape):
  """Values a metric must never read: NaN, -1, huge, inf."""
  return rng.choice(np.array([np.nan, -1.0, 1e300, -np.inf, 7.5]), shape)


def multiclass_data(seed, k, lead=(), n=400, p_obs=0.6):
  """Continuous logits [*lead, N, K], class labels [*lead, N], a mask.

  Unobserved labels hold garbage, and unobserved examples' logits are NaN or
  huge, so a metric that reads either gives a wrong answer.
  """
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=lead + (n, k)) * 2.0
  labels = rng.integers(0, k, lead + (n,)).astype(np.float64)
  mask = rng.random(lead + (n,)) < p_obs
  labels = np.where(mask, labels, garbage_like(rng, labels.shape))
  junk = ~mask & (rng.random(mask.shape) < 0.5)
  logits[junk] = np.nan
  logits[~mask & ~junk] = 1e300
  return logits, labels, mask


def softmax(z):
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def sklearn_multiclass(z, y, k):
  y = y.astype(int)
  pred = np.argmax(z, axis=-1)
  out = {"acc": skm.accuracy_score(y, pred),
         "macro_f1": skm.f1_score(y, pred, average="macro"),
         "loss": skm.log_loss(y, softmax(z), labels=range(k))}
  if k > 5:
    out["top5"] = skm.top_k_accuracy_score(y, z, k=5, labels=range(k))
  return out


@pytest.mark.parametrize("k", [3, 5, 6, 12])
@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_matches_sklearn_with_runs_axis(seed, k):
  r = 3
  logits, labels, mask = multiclass_data(seed, k, lead=(r,))
  got = metrics.masked_multiclass_metrics(logits, labels, mask)
  want_keys = {"acc", "macro_f1", "loss"} | ({"top5"} if k > 5 else set())
  assert set(got) == want_keys
  for name, v in got.items():
    assert v.shape == (r,) and v.dtype == np.float64, name
  for i in range(r):
    m = mask[i]
    want = sklearn_multiclass(logits[i][m], labels[i][m], k)
    for name in want_keys:
      assert got[name][i] == pytest.approx(want[name], rel=1e-12, abs=1e-12), (
          name, i)


def test_multiclass_shared_labels_broadcast_over_runs():
  k = 8
  _, labels, mask = multiclass_data(3, k)           # [N]: shared by both runs
  logits = np.random.default_rng(2).normal(size=(2,) + mask.shape + (k,))
  logits[:, ~mask] = np.nan                          # unobserved: never read
  got = metrics.masked_multiclass_metrics(logits, labels, mask)
  for i in range(2):
    single = metrics.masked_multiclass_metrics(logits[i], labels, mask)
    want = sklearn_multiclass(logits[i][mask], labels[mask], k)
    for name in want:
      assert single[name].shape == ()
      assert got[name][i] == single[name]
      assert got[name][i] == pytest.approx(want[name], rel=1e-12)


def test_multiclass_garbage_under_mask_is_ignored():
  k = 7
  logits, labels, mask = multiclass_data(4, k)
  base = metrics.masked_multiclass_metrics(logits, labels, mask)
  rng = np.random.default_rng(5)
  logits2 = logits.copy()
  logits2[~mask] = rng.normal(size=logits2[~mask].shape) * 1e6
  labels2 = np.where(mask, labels, rng.integers(-3, 3 * k, labels.shape))
  other = metrics.masked_multiclass_metrics(logits2, labels2, mask)
  for name in base:
    assert np.isfinite(base[name]) and base[name] == other[name], name


def test_macro_f1_leaves_out_classes_with_no_support_and_no_predictions():
  # Classes 2 and 4 of K = 5 are neither labels nor predictions.
  y = np.array([0, 1, 1, 3, 3, 0])
  pred = np.array([0, 1, 3, 3, 3, 1])
  logits = np.eye(5)[pred] * 3.0
  mask = np.ones(6, bool)
  got = metrics.masked_multiclass_metrics(logits, y, mask)["macro_f1"]
  assert got == pytest.approx(skm.f1_score(y, pred, average="macro"))
  assert got == pytest.approx(skm.f1_score(
      y, pred, average="macro", labels=range(5), zero_division=np.nan))
  # Counting absent classes as F1 = 0 would give a different (lower) value.
  assert got > skm.f1_score(y, pred, average="macro", labels=range(5),
                            zero_division=0) + 0.1
  # A perfect classifier scores 1 even though classes are missing.
  perfect = metrics.masked_multiclass_metrics(np.eye(5)[y], y, mask)
  assert perfect["macro_f1"] == 1.0 and perfect["acc"] == 1.0
  # A class that is predicted but never a label does count (F1 = 0).
  pred = np.array([0, 1, 1, 3, 3, 2])
  got = metrics.masked_multiclass_metrics(np.eye(5)[pred], y, mask)
  assert got["macro_f1"] == pytest.approx(
      skm.f1_score(y, pred, average="macro"))


def test_multiclass_ties_go_to_the_lowest_index():
  k = 8
  labels = np.arange(k, dtype=np.float64)           # one example per class
  logits = np.zeros((k, k))                         # every logit tied
  mask = np.ones(k, bool)
  got = metrics.masked_multiclass_metrics(logits, labels, mask)
  assert got["acc"] == pytest.approx(1 / k)         # argmax = class 0
  assert got["top5"] == pytest.approx(5 / k)        # classes 0..4
  assert got["loss"] == pytest.approx(np.log(k))
  # Partial ties: the label (class 3) ties with classes 1 and 6 for the top.
  z = np.array([[0, 2, 0, 2, 0, 0, 2, 0.]])
  one = metrics.masked_multiclass_metrics(z, [3.0], [True])
  assert one["acc"] == 0.0 and one["top5"] == 1.0
  # Of the tied top classes 1, 3, 6, argmax picks class 1.
  assert metrics.masked_multiclass_metrics(z, [1.0], [True])["acc"] == 1.0
  assert metrics.masked_multiclass_metrics(z, [6.0], [True])["acc"] == 0.0
  z = np.array([[9, 8, 7, 6, 5, 1, 1, 1.]])         # label 6 ties 5 and 7
  assert metrics.masked_multiclass_metrics(z, [5.0], [True])["top5"] == 0.0
  assert metrics.masked_multiclass_metrics(z, [4.0], [True])["top5"] == 1.0


def test_multiclass_loss_is_stable_for_huge_logits():
  k = 6
  logits, labels, mask = multiclass_data(6, k, p_obs=1.0)
  logits = logits * 1e4
  y = labels.astype(int)
  # −log_softmax via logaddexp.reduce, which never overflows either.
  want = np.mean(np.logaddexp.reduce(logits, axis=-1)
                 - logits[np.arange(len(y)), y])
  got = metrics.masked_multiclass_metrics(logits, labels, mask)["loss"]
  assert np.isfinite(got) and got == pytest.approx(want, rel=1e-12)
  assert got > 1e3                                  # not clipped probabilities


def test_multiclass_undefined_is_nan():
  k = 10
  logits, labels, mask = multiclass_data(7, k, lead=(3,))
  mask[0] = False                                   # run 0: nothing observed
  logits[1, np.argmax(mask[1]), 4] = np.nan         # run 1: NaN on observed
  got = metrics.masked_multiclass_metrics(logits, labels, mask)
  for name, v in got.items():
    assert np.isnan(v[:2]).all() and np.isfinite(v[2]), name


def test_multiclass_rejects_bad_observed_labels():
  logits, labels, mask = multiclass_data(8, 4)
  i = np.argmax(mask)
  for bad in (4.0, 1.5, -1.0, np.nan):
    labels2 = labels.copy()
    labels2[i] = bad
    with pytest.raises(ValueError, match="class indices"):
      metrics.masked_multiclass_metrics(logits, labels2, mask)
  with pytest.raises(ValueError, match="bool"):
    metrics.masked_multiclass_metrics(logits, labels, mask.astype(int))
  with pytest.raises(ValueError, match="broadcast"):
    metrics.masked_multiclass_metrics(logits, labels[:-1], mask[:-1])


def regression_data(seed, lead=(), n=300, p_obs=0.6):
  rng = np.random.default_rng(seed)
  target = rng.normal(size=lead + (n,)) * 3.0 + 1.0
  pred = target + rng.normal(size=target.shape)
  mask = rng.random(target.shape) < p_obs
  target = np.where(mask, target, garbage_like(rng, target.shape))
  pred = np.where(mask | (rng.random(mask.shape) < 0.5), pred, np.nan)
  return pred, target, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_matches_sklearn_with_runs_axis(seed):
  r = 3
  pred, target, mask = regression_data(seed, lead=(r,))
  got = metrics.masked_regression_metrics(pred, target, mask)
  assert set(got) == {"r2", "mse", "mae"}
  for i in range(r):
    m = mask[i]
    y, p = target[i][m], pred[i][m]
    assert got["r2"][i] == pytest.approx(skm.r2_score(y, p), rel=1e-12)
    assert got["mse"][i] == pytest.approx(skm.mean_squared_error(y, p),
                                          rel=1e-12)
    assert got["mae"][i] == pytest.approx(skm.mean_absolute_error(y, p),
                                          rel=1e-12)
  # Shared targets and mask broadcast over runs.
  _, target1, mask1 = regression_data(seed + 10)
  pred = np.random.default_rng(seed).normal(size=(r,) + mask1.shape)
  got = metrics.masked_regression_metrics(pred, target1, mask1)
  for i in range(r):
    y, p = target1[mask1], pred[i][mask1]
    assert got["r2"][i] == pytest.approx(skm.r2_score(y, p), rel=1e-12)


def test_regression_undefined_is_nan():
  rng = np.random.default_rng(3)
  target = rng.normal(size=(5, 6))
  pred = rng.normal(size=(5, 6))
  mask = np.ones((5, 6), bool)
  mask[0] = False                                   # nothing observed
  mask[1] = [True] + [False] * 5                    # one target: SST = 0
  target[2] = 0.1                                   # constant: SST = 0, even
  # though the float mean of 0.1s is not exactly 0.1.
  assert np.mean(target[2]) != 0.1
  pred[3, 2] = np.nan                               # NaN on an observed entry
  target[~mask] = np.nan
  got = metrics.masked_regression_metrics(pred, target, mask)
  assert np.isnan(got["r2"][:4]).all() and np.isfinite(got["r2"][4])
  for name in ("mse", "mae"):
    assert np.isnan(got[name][[0, 3]]).all(), name
    assert np.isfinite(got[name][[1, 2, 4]]).all(), name


MIXED = (types.Binary("b0"), types.Multiclass("m10a", 10),
         types.Regression("r0"), types.Multiclass("m3", 3),
         types.Binary("b1"), types.Multiclass("m10b", 10),
         types.Regression("r1", loss="huber"), types.Multiclass("m5", 5))


def mixed_data(seed, tasks, r=2, n=250, runs_on_labels=False):
  """[R, N, O] outputs, [N, T] (or [R, N, T]) labels, mask, garbage under it."""
  rng = np.random.default_rng(seed)
  lead = (r,) if runs_on_labels else ()
  num_outputs = int(types.output_offsets(tasks)[-1])
  outputs = rng.normal(size=(r, n, num_outputs)) * 2.0
  cols = []
  for t in tasks:
    if t.type == "binary":
      cols.append(rng.random(lead + (n,)) < 0.4)
    elif t.type == "multiclass":
      cols.append(rng.integers(0, t.num_classes, lead + (n,)))
    else:
      cols.append(rng.normal(size=lead + (n,)))
  labels = np.stack(cols, axis=-1).astype(np.float64)
  mask = rng.random(labels.shape) < 0.7
  labels = np.where(mask, labels, garbage_like(rng, labels.shape))
  return outputs, labels, mask


def expected_task(task, out, y, m):
  """A task's metrics from the per-type functions on its own columns."""
  if task.type == "binary":
    return {"auc": skm.roc_auc_score(y[m], out[m, 0]),
            "ap": skm.average_precision_score(y[m], out[m, 0]),
            "acc": np.mean((out[m, 0] > 0) == (y[m] == 1)),
            "loss": np.mean(np.logaddexp(0, -out[m, 0]) * y[m]
                            + np.logaddexp(0, out[m, 0]) * (1 - y[m]))}
  if task.type == "multiclass":
    return sklearn_multiclass(out[m], y[m], task.num_classes)
  return {"r2": skm.r2_score(y[m], out[m, 0]),
          "mse": skm.mean_squared_error(y[m], out[m, 0]),
          "mae": skm.mean_absolute_error(y[m], out[m, 0])}


@pytest.mark.parametrize("runs_on_labels", [False, True])
def test_typed_metrics_mixed_tasks(runs_on_labels):
  tasks = MIXED
  r = 2
  outputs, labels, mask = mixed_data(0, tasks, r=r,
                                     runs_on_labels=runs_on_labels)
  mask[..., 3] = False                              # m3: nothing observed
  got = metrics.typed_metrics_batched(outputs, labels, mask, tasks)
  assert len(got) == r
  off = types.output_offsets(tasks)
  for i in range(r):
    y_all = labels[i] if runs_on_labels else labels
    m_all = mask[i] if runs_on_labels else mask
    d = got[i]
    assert list(d["per_task"]) == [t.name for t in tasks]
    for j, t in enumerate(tasks):
      row = d["per_task"][t.name]
      assert tuple(row) == t.metrics, t.name
      assert all(isinstance(v, float) for v in row.values())
      if t.name == "m3":
        assert all(np.isnan(v) for v in row.values())
        continue
      want = expected_task(t, outputs[i][:, off[j]:off[j + 1]], y_all[:, j],
                           m_all[:, j])
      for name in t.metrics:
        assert row[name] == pytest.approx(want[name], rel=1e-12), (t.name, name)
    # Means: over the tasks having each metric, skipping NaN.
    assert list(d["mean"]) == ["auc", "ap", "acc", "loss", "top5", "macro_f1",
                               "r2", "mse", "mae", types.PRIMARY]
    for name, v in d["mean"].items():
      if name == types.PRIMARY:
        vals = [d["per_task"][t.name][t.primary_metric] for t in tasks]
      else:
        vals = [d["per_task"][t.name][name] for t in tasks if name in t.metrics]
      vals = [x for x in vals if not np.isnan(x)]
      assert v == pytest.approx(np.mean(vals), rel=1e-12), name
    assert d["mean"]["top5"] == pytest.approx(np.mean(
        [d["per_task"][n]["top5"] for n in ("m10a", "m10b")]))
    assert d["mean"][types.PRIMARY] == pytest.approx(np.mean(
        [d["per_task"][n][k] for n, k in (
            ("b0", "auc"), ("m10a", "acc"), ("r0", "r2"), ("b1", "auc"),
            ("m10b", "acc"), ("r1", "r2"), ("m5", "acc"))]))
    # The single-run form agrees.
    single = metrics.typed_metrics(outputs[i], y_all, m_all, tasks)
    assert same(single, d)


def test_typed_metrics_garbage_under_mask_is_ignored():
  tasks = MIXED
  outputs, labels, mask = mixed_data(1, tasks)
  base = metrics.typed_metrics_batched(outputs, labels, mask, tasks)
  rng = np.random.default_rng(2)
  labels2 = np.where(mask, labels, rng.normal(size=labels.shape) * 1e8)
  # Unobserved rows of every task's outputs: NaN (task by task).
  outputs2 = outputs.copy()
  off = types.output_offsets(tasks)
  for j in range(len(tasks)):
    outputs2[:, ~mask[:, j], off[j]:off[j + 1]] = np.nan
  other = metrics.typed_metrics_batched(outputs2, labels2, mask, tasks)
  for i in range(len(base)):
    for t in tasks:
      for name, v in base[i]["per_task"][t.name].items():
        assert np.isfinite(v) and v == pytest.approx(
            other[i]["per_task"][t.name][name], rel=1e-12, abs=1e-15), (
                t.name, name)


def same(a, b):
  """Exact equality of nested dicts of floats, with NaN equal to NaN."""
  if isinstance(a, dict):
    return (isinstance(b, dict) and list(a) == list(b)
            and all(same(a[k], b[k]) for k in a))
  return a == b or (np.isnan(a) and np.isnan(b))


@pytest.mark.parametrize("seed", [0, 1])
def test_typed_metrics_all_binary_equals_task_metrics_batched(seed):
  t = 40
  logits, labels, mask = random_data(seed, r=3, t=t)
  labels[:, :, 5] = np.where(mask[:, :, 5], 0.0, -1.0)   # a NaN-AUC task
  tasks = [types.Binary(f"t{j}") for j in range(t)]
  names = [x.name for x in tasks]
  want = metrics.task_metrics_batched(logits, labels, mask, names)
  got = metrics.typed_metrics_batched(logits, labels, mask, tasks)
  for w, g in zip(want, got, strict=True):
    assert np.isnan(g["per_task"]["t5"]["auc"])
    assert same(g["per_task"], w["per_task"])
    assert same({k: v for k, v in g["mean"].items() if k != types.PRIMARY},
                w["mean"])
    assert g["mean"][types.PRIMARY] == w["mean"]["auc"]
  # Shared [N, T] labels and a single run too.
  want = metrics.task_metrics(logits[0], labels[0], mask[0], names)
  got = metrics.typed_metrics(logits[0], labels[0], mask[0], tasks)
  assert same(got["per_task"], want["per_task"])
  assert got["mean"][types.PRIMARY] == want["mean"]["auc"]


def test_typed_metrics_errors():
  tasks = MIXED
  outputs, labels, mask = mixed_data(3, tasks)
  with pytest.raises(ValueError, match="output columns"):
    metrics.typed_metrics_batched(outputs[..., :-1], labels, mask, tasks)
  with pytest.raises(ValueError, match=r"\[R, N, O\]"):
    metrics.typed_metrics_batched(outputs[0], labels, mask, tasks)
  with pytest.raises(ValueError, match="batched"):
    metrics.typed_metrics(outputs, labels, mask, tasks)
  with pytest.raises(ValueError, match="labels must have shape"):
    metrics.typed_metrics_batched(outputs, labels[:, :-1], mask, tasks)
  with pytest.raises(ValueError, match="distinct"):
    metrics.typed_metrics_batched(outputs[..., :2], labels[:, :2], mask[:, :2],
                                  [types.Binary("a"), types.Binary("a")])
