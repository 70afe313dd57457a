"""grouping_search against an independent brute force and known structures.

The brute force enumerates every set of at most b distinct groups
(itertools.combinations) and scores it as Σ_t max over its groups holding t,
the definition, with no partition argument behind it.
"""

import itertools
import math
import time

import numpy as np
import pytest

from mtljax.analysis import grouping_search as gs


def _table(groups, scores, num_tasks):
  """[G, T] scores with -inf wherever g cannot serve t (outside it, NaN)."""
  out = np.full((len(groups), num_tasks), -np.inf)
  for i, g in enumerate(groups):
    for t in g:
      if not np.isnan(scores[i, t]):
        out[i, t] = scores[i, t]
  return out


def _brute(groups, scores, num_tasks, max_k, costs=None):
  """{k: (values, costs)} over every set of k distinct groups, k ≤ max_k."""
  tab = _table(groups, scores, num_tasks)
  c = np.ones(len(groups)) if costs is None else np.asarray(costs, float)
  out = {}
  for k in range(1, min(max_k, len(groups)) + 1):
    combos = np.array(list(itertools.combinations(range(len(groups)), k)))
    best = tab[combos].max(axis=1)
    covered = np.all(np.isfinite(best), axis=1)
    vals = np.where(covered, np.where(np.isfinite(best), best, 0).sum(1),
                    -np.inf)
    out[k] = (vals, c[combos].sum(axis=1))
  return out


def _brute_best(brute, b, budget=None):
  """The optimal value with at most b groups within budget (None: none)."""
  best = -np.inf
  for k, (vals, cost) in brute.items():
    if k <= b:
      ok = vals if budget is None else np.where(cost <= budget + 1e-9, vals,
                                                -np.inf)
      best = max(best, ok.max())
  return None if best == -np.inf else best


def _check(sel, groups, scores, num_tasks, b, costs=None, budget=None):
  """The selection is valid, scored right and within the limits."""
  tab = _table(groups, scores, num_tasks)
  index = {tuple(g): i for i, g in enumerate(groups)}
  assert list(sel.groups) == sorted(set(sel.groups))
  assert sel.num_networks == len(sel.groups) <= b
  rows = tab[[index[g] for g in sel.groups]]
  best = rows.max(axis=0)
  assert np.all(np.isfinite(best)), "a task is not covered"
  assert np.isclose(best.sum(), sel.value)
  for t in range(num_tasks):
    assert sel.assignment[t] in sel.groups and t in sel.assignment[t]
    assert tab[index[sel.assignment[t]], t] == best[t]
  c = (np.ones(len(groups)) if costs is None else np.asarray(costs))
  assert np.isclose(sel.cost, sum(c[index[g]] for g in sel.groups))
  if budget is not None:
    assert sel.cost <= budget + 1e-9


def _random_case(rng, num_tasks, subset):
  groups = gs.all_groups(num_tasks)
  if subset:
    keep = rng.random(len(groups)) < 0.5
    keep[:num_tasks] = rng.random(num_tasks) < 0.8  # Some singletons gone.
    groups = [g for g, k in zip(groups, keep) if k] or groups[-1:]
  scores = rng.normal(size=(len(groups), num_tasks))
  return groups, scores


@pytest.mark.parametrize("num_tasks", [2, 3, 4, 5])
@pytest.mark.parametrize("subset", [False, True])
def test_matches_brute_force_per_network_count(num_tasks, subset):
  rng = np.random.default_rng(10 * num_tasks + subset)
  for _ in range(1 if num_tasks == 5 and not subset else 4):
    groups, scores = _random_case(rng, num_tasks, subset)
    brute = _brute(groups, scores, num_tasks, num_tasks)
    by_b = gs.selections_by_networks(groups, scores, num_tasks)
    for b in range(1, num_tasks + 1):
      want = _brute_best(brute, b)
      sel = gs.best_selection(groups, scores, num_tasks, max_networks=b)
      assert sel == by_b[b]
      if want is None:
        assert sel is None
        continue
      assert np.isclose(sel.value, want), (b, sel, want)
      _check(sel, groups, scores, num_tasks, b)


@pytest.mark.parametrize("num_tasks", [2, 3, 4, 5])
def test_matches_brute_force_with_costs(num_tasks):
  rng = np.random.default_rng(num_tasks)
  for _ in range(3):
    groups, scores = _random_case(rng, num_tasks, subset=num_tasks == 5)
    costs = rng.uniform(0.0, 3.0, size=len(groups))
    costs[rng.random(len(groups)) < 0.1] = 0.0
    brute = _brute(groups, scores, num_tasks, num_tasks, costs)
    for budget in (0.5, 1.5, 3.0, 6.0, None):
      for b in (1, 2, num_tasks):
        want = _brute_best(brute, b, budget)
        sel = gs.best_selection(groups, scores, num_tasks, max_networks=b,
                                costs=costs, budget=budget)
        if want is None:
          assert sel is None
          continue
        assert np.isclose(sel.value, want), (b, budget, sel, want)
        _check(sel, groups, scores, num_tasks, b, costs, budget)


def test_budget_without_costs_counts_networks():
  rng = np.random.default_rng(7)
  groups, scores = _random_case(rng, 4, subset=False)
  for b in range(1, 5):
    assert (gs.best_selection(groups, scores, 4, budget=b)
            == gs.best_selection(groups, scores, 4, max_networks=b))
  assert gs.best_selection(groups, scores, 4, budget=0.5) is None


def _blocks_case():
  """Tasks {0,1} and {2,3} help each other; mixing them hurts."""
  groups = gs.all_groups(4)
  scores = np.zeros((len(groups), 4))
  for i, g in enumerate(groups):
    for t in g:
      same = sum((u < 2) == (t < 2) for u in g if u != t)
      other = sum((u < 2) != (t < 2) for u in g)
      scores[i, t] = 1.0 + same - 0.3 * other
  return groups, scores


def test_known_blocks():
  groups, scores = _blocks_case()
  two = gs.best_selection(groups, scores, 4, max_networks=2)
  assert two.groups == ((0, 1), (2, 3))
  assert two.assignment == ((0, 1), (0, 1), (2, 3), (2, 3))
  assert two.value == pytest.approx(8.0) and two.cost == 2.0
  one = gs.best_selection(groups, scores, 4, max_networks=1)
  assert one.groups == ((0, 1, 2, 3),)
  assert one.value == pytest.approx(4 * (2.0 - 0.6))
  # More networks add nothing here, so the tie goes to fewer networks.
  four = gs.best_selection(groups, scores, 4, max_networks=4)
  assert four == two


def test_overlap_picks_each_tasks_best_group():
  # Task t's best group is (t, t+1 mod 4); these overlap.
  groups = gs.all_groups(4, max_size=2)
  scores = np.zeros((len(groups), 4))
  for i, g in enumerate(groups):
    for t in g:
      scores[i, t] = 2.0 if g == tuple(sorted((t, (t + 1) % 4))) else 1.0
  sel = gs.best_selection(groups, scores, 4, max_networks=4)
  assert sel.groups == ((0, 1), (0, 3), (1, 2), (2, 3))
  assert sel.value == pytest.approx(8.0)
  assert sel.assignment == ((0, 1), (1, 2), (2, 3), (0, 3))
  brute = _brute(groups, scores, 4, 4)
  # No pair covers four tasks.
  assert gs.best_selection(groups, scores, 4, max_networks=1) is None
  assert _brute_best(brute, 1) is None
  for b in range(2, 5):
    got = gs.best_selection(groups, scores, 4, max_networks=b)
    assert np.isclose(got.value, _brute_best(brute, b))
    _check(got, groups, scores, 4, b)


def test_overlap_beats_every_partition():
  # 1 is best in (0, 1), 0 best in (0, 2), 2 best in (0, 2): two overlapping
  # groups beat every partition into two groups.
  groups = [(0, 1), (0, 2), (0,), (1,), (2,)]
  scores = np.array([[1.0, 5.0, 0], [4.0, 0, 5.0], [1.0, 0, 0],
                     [0, 1.0, 0], [0, 0, 1.0]])
  sel = gs.best_selection(groups, scores, 3, max_networks=2)
  assert sel.groups == ((0, 1), (0, 2))
  assert sel.assignment == ((0, 2), (0, 1), (0, 2))
  assert sel.value == pytest.approx(14.0)
  assert np.isclose(_brute_best(_brute(groups, scores, 3, 2), 2), 14.0)


def test_ties_are_deterministic():
  groups = gs.all_groups(3)
  flat = np.ones((len(groups), 3))
  # Every cover scores 3: one network wins.
  assert gs.best_selection(groups, flat, 3).groups == ((0, 1, 2),)
  # Without the full group, two networks: the smallest sorted tuple.
  sel = gs.best_selection(groups[:-1], flat[:-1], 3)
  assert sel.groups == ((0,), (1, 2))
  # Equal value and networks: the cheaper wins, whatever the order.
  costs = np.ones(len(groups) - 1)
  costs[groups.index((0, 2))] = costs[groups.index((1,))] = 0.4
  sel = gs.best_selection(groups[:-1], flat[:-1], 3, costs=costs)
  assert sel.groups == ((0, 2), (1,)) and sel.cost == pytest.approx(0.8)
  # Float noise within tolerance does not beat the lexicographic choice.
  noisy = flat[:-1].copy()
  noisy[groups.index((0, 2)), 0] += 1e-15
  assert gs.best_selection(groups[:-1], noisy, 3).groups == ((0,), (1, 2))


def test_nan_scores_and_infeasible():
  groups = [(0, 1), (1,), (0,), (1, 2)]
  nan = np.nan
  scores = np.array([[5.0, nan, 0], [0, 1.0, 0], [0, 0, 0], [0, 2.0, nan]])
  # (0, 1) can still serve task 0; (1, 2) cannot serve 2: nothing can.
  assert gs.best_selection(groups, scores, 3) is None
  scores[3, 2] = 3.0
  sel = gs.best_selection(groups, scores, 3)
  assert sel.groups == ((0, 1), (1, 2))
  assert sel.assignment == ((0, 1), (1, 2), (1, 2))
  assert sel.value == pytest.approx(10.0)
  assert gs.best_selection(groups, scores, 3, max_networks=1) is None
  # A task in no group at all.
  assert gs.best_selection([(0,)], [[1.0, 0.0]], 2) is None
  # Budget too small.
  assert gs.best_selection(groups, scores, 3, costs=[1, 1, 1, 1],
                           budget=1.5) is None
  brute = _brute(groups, scores, 3, 3)
  assert np.isclose(_brute_best(brute, 3), 10.0)
  assert _brute_best(brute, 1) is None


def test_single_task():
  sel = gs.best_selection([(0,)], [[0.7]], 1)
  assert sel == gs.Selection(value=0.7, groups=((0,),), assignment=((0,),),
                             cost=1.0, num_networks=1)
  assert gs.selections_by_networks([(0,)], [[0.7]], 1) == {1: sel}
  assert gs.best_selection([(0,)], [[np.nan]], 1) is None


def test_validation():
  ok = dict(groups=[(0,), (1,)], scores=np.zeros((2, 2)), num_tasks=2)
  bad = [
      (dict(scores=np.zeros((2, 3))), "shape"),
      (dict(groups=[(0,), (2,)]), "outside"),
      (dict(groups=[(0,), (0,)]), "distinct"),
      (dict(groups=[(0, 0), (1,)]), "repeats"),
      (dict(groups=[(), (1,)]), "non-empty"),
      (dict(costs=[1.0, -1.0]), "non-negative"),
      (dict(costs=[1.0]), "costs has shape"),
      (dict(max_networks=0), "max_networks"),
      (dict(num_tasks=0), "num_tasks"),
      (dict(scores=[[np.inf, 0], [0, 0]]), "finite"),
  ]
  for change, match in bad:
    kw = {**ok, **change}
    with pytest.raises(ValueError, match=match):
      gs.best_selection(kw.pop("groups"), kw.pop("scores"),
                        kw.pop("num_tasks"), **kw)
  with pytest.raises(ValueError, match="max_size"):
    gs.all_groups(3, max_size=0)
  with pytest.raises(ValueError, match="single"):
    gs.estimate_from_pairs(3, [1.0, 2.0], {})
  with pytest.raises(ValueError, match="affinity"):
    gs.estimate_from_affinity(3, np.zeros((3, 2)))


def test_all_groups():
  assert gs.all_groups(3) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2),
                              (0, 1, 2)]
  assert gs.all_groups(3, max_size=2) == gs.all_groups(3)[:6]
  assert len(gs.all_groups(6)) == 63


def test_estimate_from_pairs_by_hand():
  single = [0.5, 0.6, 0.7]
  pair = {(0, 1): [0.55, 0.62, 9.0], (0, 2): [0.40, 9.0, 0.80],
          (1, 2): [9.0, 0.66, 0.74]}
  est = gs.estimate_from_pairs(3, single, pair)
  assert len(est) == 7
  np.testing.assert_allclose(est[(0,)], [0.5, np.nan, np.nan])
  np.testing.assert_allclose(est[(0, 2)], [0.40, np.nan, 0.80])
  np.testing.assert_allclose(est[(0, 1, 2)], [(0.55 + 0.40) / 2,
                                              (0.62 + 0.66) / 2,
                                              (0.80 + 0.74) / 2])
  # A missing pair poisons the tasks it would have scored.
  est = gs.estimate_from_pairs(3, single, {(0, 1): pair[(0, 1)]})
  assert np.all(np.isnan(est[(0, 2)][[0, 2]]))
  np.testing.assert_allclose(est[(0, 1, 2)], [np.nan, np.nan, np.nan])
  np.testing.assert_allclose(est[(0, 1)], [0.55, 0.62, np.nan])
  sel = gs.best_from_table(est, 3)
  assert sel.groups == ((0, 1), (2,))


def test_estimate_from_affinity_by_hand():
  aff = np.array([[9.0, 0.2, -0.1], [0.3, 9.0, 0.4], [0.5, -0.6, 9.0]])
  est = gs.estimate_from_affinity(3, aff)
  assert len(est) == 7
  np.testing.assert_allclose(est[(1,)], [np.nan, 0.0, np.nan])
  np.testing.assert_allclose(est[(0, 1)], [0.3, 0.2, np.nan])
  np.testing.assert_allclose(est[(0, 1, 2)], [(0.3 + 0.5) / 2,
                                              (0.2 - 0.6) / 2,
                                              (-0.1 + 0.4) / 2])
  assert len(gs.estimate_from_affinity(5, np.zeros((5, 5)))) == 31


def test_group_value_scores_an_estimate_with_true_scores():
  groups, scores = _blocks_case()
  true = {g: np.where(np.isin(np.arange(4), g), scores[i], np.nan)
          for i, g in enumerate(groups)}
  assert gs.group_value([(0, 1), (2, 3)], true, 4) == pytest.approx(8.0)
  assert gs.group_value([(0, 1), (0, 1, 2, 3)], true, 4) == pytest.approx(
      2 + 2 + 1.4 + 1.4)
  assert math.isnan(gs.group_value([(0, 1)], true, 4))
  assert gs.best_from_table(true, 4, max_networks=2).groups == ((0, 1),
                                                                 (2, 3))
  # An estimate picked on affinities, then scored on the truth.
  aff = np.full((4, 4), -1.0)
  aff[0, 1] = aff[1, 0] = aff[2, 3] = aff[3, 2] = 1.0
  est = gs.best_from_table(gs.estimate_from_affinity(4, aff), 4,
                           max_networks=2)
  assert est.groups == ((0, 1), (2, 3))
  assert gs.group_value(est.groups, true, 4) == pytest.approx(8.0)
  with pytest.raises(ValueError, match="no entry"):
    gs.group_value([(0, 1)], {(0,): [1.0] * 4}, 4)


def test_ten_tasks_all_groups_is_fast():
  rng = np.random.default_rng(0)
  groups = gs.all_groups(10)
  scores = rng.normal(size=(len(groups), 10))
  start = time.perf_counter()
  by_b = gs.selections_by_networks(groups, scores, 10)
  elapsed = time.perf_counter() - start
  values = [by_b[b].value for b in range(1, 11)]
  assert all(x <= y + 1e-9 for x, y in zip(values, values[1:]))
  assert by_b[1].groups == (tuple(range(10)),)  # The one full cover.
  for b in (1, 3, 10):
    sel = gs.best_selection(groups, scores, 10, max_networks=b)
    assert sel == by_b[b]
    _check(sel, groups, scores, 10, b)
  # At b = T each task can take its best group anywhere.
  assert np.isclose(by_b[10].value, _table(groups, scores, 10).max(0).sum())
  assert elapsed < 20.0  # Loose: a shared CPU; it takes well under 1 s.


def test_tie_breaking_matches_brute_force():
  # Small integer scores (many ties), NaNs, zero costs: the full order
  # (value, fewer networks, lower cost, smallest sorted groups) is exact.
  rng = np.random.default_rng(1)
  for _ in range(60):
    T = int(rng.integers(1, 5))
    groups = [g for g in gs.all_groups(T) if rng.random() < 0.6]
    groups = groups or gs.all_groups(T)
    s = rng.integers(0, 3, size=(len(groups), T)).astype(float)
    s[rng.random(s.shape) < 0.1] = np.nan
    costs = (rng.integers(0, 3, size=len(groups)).astype(float)
             if rng.random() < 0.5 else None)
    c = np.ones(len(groups)) if costs is None else costs
    tab = _table(groups, s, T)
    for b in range(1, T + 1):
      for budget in (None, 1, 2):
        want = None
        for k in range(1, b + 1):
          for combo in itertools.combinations(range(len(groups)), k):
            best = tab[list(combo)].max(axis=0)
            cost = c[list(combo)].sum()
            if np.all(np.isfinite(best)) and (budget is None or cost <= budget):
              key = (-best.sum(), k, cost,
                     tuple(sorted(groups[i] for i in combo)))
              want = key if want is None else min(want, key)
        sel = gs.best_selection(groups, s, T, max_networks=b, costs=costs,
                                budget=budget)
        got = sel and (-sel.value, sel.num_networks, sel.cost, sel.groups)
        assert got == want, (groups, s, costs, b, budget)
