"""Label controls: exact fractions/budgets, nesting, independence, shuffle."""

import numpy as np
import pytest

from mtljax.data import labels as L


def _stored(n=1000, t=4, missing=0.2, seed=0):
  rng = np.random.default_rng(seed)
  y = (rng.random((n, t)) < 0.4).astype(np.int8)
  y[rng.random((n, t)) < missing] = -1
  return y


def test_fraction_keeps_exact_round_half_up_counts_of_observed_labels():
  y = _stored()
  fracs = [0.0, 0.1, 0.25, 1.0]
  mask = L.label_fraction_mask(y, fracs, seed=3)
  n_obs = (y >= 0).sum(0)
  expected = np.floor(np.array(fracs) * n_obs + 0.5).astype(int)
  np.testing.assert_array_equal(mask.sum(0), expected)
  assert not (mask & (y < 0)).any()  # never keeps a missing label
  # Round half up, not to even: 0.5 * 5 observed -> 3 kept.
  five = np.array([[1], [0], [1], [0], [1]], np.int8)
  assert L.label_fraction_mask(five, 0.5, seed=0).sum() == 3


def test_budget_keeps_exactly_n_per_task_and_minus_one_keeps_all():
  y = _stored()
  mask = L.label_budget_mask(y, [0, 7, 300, -1], seed=1)
  np.testing.assert_array_equal(mask.sum(0)[:3], [0, 7, 300])
  np.testing.assert_array_equal(mask[:, 3], y[:, 3] >= 0)
  assert not (mask & (y < 0)).any()


@pytest.mark.parametrize("kind", ["fraction", "budget"])
def test_smaller_label_sets_are_nested_in_larger_ones(kind):
  y = _stored()
  if kind == "fraction":
    masks = [L.label_fraction_mask(y, p, seed=5) for p in (0.05, 0.2, 0.6)]
  else:
    masks = [L.label_budget_mask(y, b, seed=5) for b in (10, 100, 400)]
  for small, large in zip(masks, masks[1:]):
    assert small.sum() < large.sum()
    assert not (small & ~large).any()


def test_tasks_are_independent_of_each_others_controls():
  y = _stored()
  a = L.label_budget_mask(y, [50, 10, 20, 30], seed=2)
  b = L.label_budget_mask(y, [50, 200, 5, -1], seed=2)
  np.testing.assert_array_equal(a[:, 0], b[:, 0])
  # ... and the tasks do not all pick the same examples.
  c = L.label_budget_mask(y, 50, seed=2)
  assert not np.array_equal(c[:, 0], c[:, 1])


def test_same_seed_same_mask_other_seed_other_mask():
  y = _stored()
  a = L.label_fraction_mask(y, 0.3, seed=11)
  np.testing.assert_array_equal(a, L.label_fraction_mask(y, 0.3, seed=11))
  b = L.label_fraction_mask(y, 0.3, seed=12)
  np.testing.assert_array_equal(a.sum(0), b.sum(0))
  assert (a != b).mean() > 0.1


def test_shuffle_keeps_each_tasks_marginals_and_breaks_its_pairing():
  y = _stored(n=2000)
  y[:, 1] = y[:, 0]  # task 1 is a copy of task 0 before the shuffle
  out = L.shuffle_task_labels(y, [1, 2], seed=4)
  for t in range(4):
    np.testing.assert_array_equal(np.sort(out[:, t]), np.sort(y[:, t]))
  np.testing.assert_array_equal(out[:, [0, 3]], y[:, [0, 3]])
  assert (out[:, 1] != y[:, 1]).mean() > 0.2
  assert (out[:, 1] == out[:, 0]).mean() < 0.8  # the pairing is gone
  # Each shuffled task has its own permutation.
  y2 = np.repeat(np.arange(2000, dtype=np.int64)[:, None] % 2, 4, axis=1)
  y2[:, 2] = y2[:, 1]
  out2 = L.shuffle_task_labels(y2, [1, 2], seed=4)
  assert not np.array_equal(out2[:, 1], out2[:, 2])


def test_apply_label_controls_zeroes_unkept_labels():
  y = _stored()
  labels01, mask = L.apply_label_controls(y, seed=0, budget=[20, 30, 40, 50])
  assert labels01.dtype == np.int8 and mask.dtype == bool
  np.testing.assert_array_equal(mask.sum(0), [20, 30, 40, 50])
  np.testing.assert_array_equal(labels01[mask], y[mask])
  assert (labels01[~mask] == 0).all()
  full01, full_mask = L.apply_label_controls(y, seed=0)
  np.testing.assert_array_equal(full_mask, y >= 0)
  np.testing.assert_array_equal(full01, np.maximum(y, 0))


def test_budget_after_shuffle_is_still_exact():
  y = _stored()
  _, mask = L.apply_label_controls(y, seed=9, budget=25, shuffle_tasks=[2])
  np.testing.assert_array_equal(mask.sum(0), [25] * 4)


@pytest.mark.parametrize("call, match", [
    (lambda y: L.label_fraction_mask(y, 1.5, 0), "1.5"),
    (lambda y: L.label_fraction_mask(y, float("nan"), 0), "nan"),
    (lambda y: L.label_fraction_mask(y, [0.1, 0.2], 0), "one entry per task"),
    (lambda y: L.label_budget_mask(y, 10**6, 0), "1000000"),
    (lambda y: L.label_budget_mask(y, -2, 0), "-2"),
    (lambda y: L.label_budget_mask(y, 2.5, 0), "2.5"),
    (lambda y: L.label_budget_mask(y, float("inf"), 0), "inf"),
    (lambda y: L.label_budget_mask(y, 10**6, 0, task_names="abcd"),
     "for a exceeds"),
    (lambda y: L.shuffle_task_labels(y, [4], 0), "out of range"),
    (lambda y: L.shuffle_task_labels(y, [1, 1], 0), "distinct"),
    (lambda y: L.apply_label_controls(y, seed=0, fraction=0.1, budget=5),
     "not both"),
    (lambda y: L.label_fraction_mask(y[0], 0.1, 0), "shape"),
])
def test_bad_controls_raise_value_errors_naming_the_value(call, match):
  with pytest.raises(ValueError, match=match):
    call(_stored())
