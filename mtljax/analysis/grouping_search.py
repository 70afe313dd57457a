"""Exact task-grouping search (Standley et al., 2020, "Which tasks should be
learned together in multi-task learning?").

Networks trained on task groups give each task t of a group g a score
s[g, t] (higher is better; NaN: g cannot serve t). A selection is a set of
groups covering every task; groups may overlap and a task is scored by its
best chosen group, so its value is Σ_t max_{chosen g ∋ t} s[g, t].
`best_selection` finds the optimum within a network count and/or a budget on
the groups' costs (parameters, FLOPs).

Why the partition DP is exact: the tasks whose best chosen group is g form a
block A ⊆ g, so a selection is a partition into blocks, each worth
v(A) = max_{g ⊇ A} Σ_{t∈A} s[g, t] at best, and f[S] = max over A ⊆ S
holding S's lowest task of v(A) + f[S \\ A] (O(3^T), fast for T ≤ 12). Each
S keeps a front of non-dominated (value, networks, cost) points so both
limits apply at once. Ties (values within a 1e-12 relative tolerance, so
summation order never flips a choice) go to fewer networks, then lower
cost, then the smallest sorted tuple of groups. `estimate_from_pairs` (HOA)
and `estimate_from_affinity` (TAG, Fifty et al., 2021) estimate every
group's scores; `group_value` scores an estimated pick with the truth.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import operator
from collections.abc import Mapping

import numpy as np

_RTOL = 1e-12
_VALUE = operator.itemgetter(0)
_COST = operator.itemgetter(2)


def _gk(p):
  """The sorted groups tuple of a DP point (see `_Problem._front`)."""
  return tuple(sorted(p[3] + p[4])) if len(p) == 5 else p[3]


@dataclasses.dataclass(frozen=True)
class Selection:
  """An optimal set of groups.

  Attributes:
    value: Σ_t the score of task t in its assigned group.
    groups: the chosen groups, each a sorted tuple of task indices; sorted.
    assignment: assignment[t] is the chosen group (a tuple from `groups`)
      that scores task t (its best; the first in `groups` on a tie).
    cost: Σ the costs of the chosen groups (their number without costs).
    num_networks: len(groups).
  """
  value: float
  groups: tuple[tuple[int, ...], ...]
  assignment: tuple[tuple[int, ...], ...]
  cost: float
  num_networks: int


def all_groups(num_tasks: int, max_size: int | None = None
               ) -> list[tuple[int, ...]]:
  """Every non-empty group of tasks, ordered by size then lexicographically.

  Args:
    num_tasks: T ≥ 1.
    max_size: the largest group size (None: T); 2 gives singletons and pairs.
  """
  _check_num_tasks(num_tasks)
  if max_size is not None and (int(max_size) != max_size or max_size < 1):
    raise ValueError(f"max_size must be an integer ≥ 1, got {max_size!r}")
  top = num_tasks if max_size is None else min(int(max_size), num_tasks)
  return [g for k in range(1, top + 1)
          for g in itertools.combinations(range(num_tasks), k)]


def best_selection(groups, scores, num_tasks, *, max_networks=None,
                   costs=None, budget=None) -> Selection | None:
  """The optimal selection of groups covering every task.

  Args:
    groups: G distinct, non-empty task-index tuples (indices < num_tasks).
    scores: [G, num_tasks]; scores[g, t] is used only where t ∈ groups[g]; a
      NaN there means groups[g] cannot serve task t.
    num_tasks: T ≥ 1.
    max_networks: at most this many groups (None: no limit).
    costs: [G] non-negative costs (None: each group costs 1, so `budget`
      counts networks).
    budget: total cost ≤ budget (None: no cost limit).

  Returns:
    The optimal Selection, or None if no selection covers every task within
    the limits.

  Raises:
    ValueError: on malformed inputs.
  """
  prob = _Problem(groups, scores, num_tasks, costs)
  maxn = _check_max_networks(max_networks, num_tasks)
  if budget is not None and math.isnan(float(budget)):
    raise ValueError("budget must not be NaN")
  bud = math.inf if budget is None else float(budget)
  return prob.pick(prob.solve(maxn, bud), maxn, bud)


def selections_by_networks(groups, scores, num_tasks
                           ) -> dict[int, Selection | None]:
  """{b: best_selection(..., max_networks=b)} for b = 1..num_tasks.

  One DP serves every b: the front of the full task set keeps the best point
  per network count, which is what a limit of b would keep.
  """
  prob = _Problem(groups, scores, num_tasks, None)
  front = prob.solve(num_tasks, math.inf)
  return {b: prob.pick(front, b, math.inf) for b in range(1, num_tasks + 1)}


def best_from_table(table: Mapping, num_tasks: int, **kw) -> Selection | None:
  """`best_selection` on a {group tuple: [T] scores} table (e.g. an estimate).

  Keyword arguments (max_networks, budget; costs in the table's key order)
  pass through.
  """
  keys = list(table)
  rows = [np.asarray(table[k], dtype=float) for k in keys]
  for k, r in zip(keys, rows):
    if r.shape != (num_tasks,):
      raise ValueError(f"table[{k!r}] has shape {r.shape}, "
                       f"expected ({num_tasks},)")
  scores = np.stack(rows) if rows else np.zeros((0, num_tasks))
  return best_selection(keys, scores, num_tasks, **kw)


def group_value(selection_groups, scores_of: Mapping, num_tasks: int) -> float:
  """The value of given groups under another table, each task by its best.

  Args:
    selection_groups: the groups (task-index tuples) to evaluate.
    scores_of: {group tuple: [num_tasks] scores}; NaN entries are ignored.
    num_tasks: T.

  Returns:
    Σ_t max over the groups holding t of scores_of[g][t]; NaN if a task is in
    no group or has no finite score in any of them.
  """
  _check_num_tasks(num_tasks)
  table = {tuple(sorted(k)): np.asarray(v, dtype=float)
           for k, v in scores_of.items()}
  best = np.full(num_tasks, -np.inf)
  for g in selection_groups:
    key = tuple(sorted(int(t) for t in g))
    if key not in table:
      raise ValueError(f"group {key} has no entry in scores_of")
    row = table[key]
    if row.shape != (num_tasks,):
      raise ValueError(f"scores_of[{key}] has shape {row.shape}, "
                       f"expected ({num_tasks},)")
    for t in key:
      if not 0 <= t < num_tasks:
        raise ValueError(f"task index {t} in group {key} is out of range")
      if not np.isnan(row[t]):
        best[t] = max(best[t], row[t])
  return float(best.sum()) if np.all(np.isfinite(best)) else math.nan


def estimate_from_pairs(num_tasks: int, single, pair: Mapping
                        ) -> dict[tuple, np.ndarray]:
  """Standley's higher-order approximation from single and pair runs.

  The score of t in g (|g| ≥ 2) is the mean over j ∈ g \\ {t} of t's score
  in the pair (t, j); singletons keep their own score.

  Args:
    num_tasks: T.
    single: [T] scores of each task trained alone.
    pair: {(i, j) with i < j: [T] scores}; entries i and j are used. A
      missing pair makes t's score NaN in every group holding t and j.

  Returns:
    {group: [T] array, NaN outside the group} for all 2^T − 1 groups.
  """
  _check_num_tasks(num_tasks)
  single = np.asarray(single, dtype=float)
  if single.shape != (num_tasks,):
    raise ValueError(f"single has shape {single.shape}, "
                     f"expected ({num_tasks},)")
  p = np.full((num_tasks, num_tasks), np.nan)  # p[t, j]: t's score with j.
  for key, row in pair.items():
    i, j = (int(x) for x in key)
    row = np.asarray(row, dtype=float)
    if i >= j or j >= num_tasks or i < 0:
      raise ValueError(f"pair key {key!r} must be (i, j), 0 ≤ i < j < T")
    if row.shape != (num_tasks,):
      raise ValueError(f"pair[{key!r}] has shape {row.shape}, "
                       f"expected ({num_tasks},)")
    p[i, j], p[j, i] = row[i], row[j]
  return _mean_table(num_tasks, p, single)


def estimate_from_affinity(num_tasks: int, affinity
                           ) -> dict[tuple, np.ndarray]:
  """TAG group scores from inter-task affinities (Fifty et al., 2021).

  Args:
    num_tasks: T.
    affinity: [T, T]; affinity[i, j] = Z[i→j], the effect of task i's
      lookahead step on task j's loss (positive helps).

  Returns:
    {group: [T] array, NaN outside the group} for all 2^T − 1 groups: t's
    score in g is the mean over i ∈ g \\ {t} of affinity[i, t]; 0 alone.
  """
  _check_num_tasks(num_tasks)
  a = np.asarray(affinity, dtype=float)
  if a.shape != (num_tasks, num_tasks):
    raise ValueError(f"affinity has shape {a.shape}, "
                     f"expected ({num_tasks}, {num_tasks})")
  return _mean_table(num_tasks, a.T, np.zeros(num_tasks))


def _mean_table(num_tasks, p, single):
  """{g: [T]}: single[t] alone, else the mean of p[t, j] over j ∈ g \\ {t}.

  A NaN p[t, j] (a missing pair) makes t's mean NaN wherever j is present,
  rather than silently averaging fewer pairs.
  """
  p = p.copy()
  np.fill_diagonal(p, 0.0)
  out = {}
  for g in all_groups(num_tasks):
    row = np.full(num_tasks, np.nan)
    idx = list(g)
    row[idx] = (single[idx] if len(g) == 1
                else p[np.ix_(idx, idx)].sum(axis=1) / (len(g) - 1))
    out[g] = row
  return out


def _check_num_tasks(num_tasks):
  if (isinstance(num_tasks, bool) or int(num_tasks) != num_tasks
      or num_tasks < 1):
    raise ValueError(f"num_tasks must be an integer ≥ 1, got {num_tasks!r}")


def _check_max_networks(max_networks, num_tasks):
  if max_networks is None:
    return num_tasks
  if int(max_networks) != max_networks or max_networks < 1:
    raise ValueError(f"max_networks must be an integer ≥ 1, "
                     f"got {max_networks!r}")
  return min(int(max_networks), num_tasks)  # T blocks suffice for T tasks.


class _Problem:
  """Validated inputs, block candidates and the DP over task subsets."""

  def __init__(self, groups, scores, num_tasks, costs):
    _check_num_tasks(num_tasks)
    T = self.T = int(num_tasks)
    gs = []
    for g in groups:
      key = tuple(sorted(int(t) for t in g))
      if not key:
        raise ValueError("groups must be non-empty")
      if len(set(key)) != len(key):
        raise ValueError(f"group {tuple(g)} repeats a task")
      if key[0] < 0 or key[-1] >= T:
        raise ValueError(f"group {tuple(g)} has a task index outside [0, {T})")
      gs.append(key)
    if not gs:
      raise ValueError("groups must hold at least one group")
    if len(set(gs)) != len(gs):
      raise ValueError("groups must be distinct")
    G = len(gs)
    s = np.asarray(scores, dtype=float)
    if s.shape != (G, T):
      raise ValueError(f"scores has shape {s.shape}, expected ({G}, {T})")
    member = np.zeros((G, T), dtype=bool)
    for i, g in enumerate(gs):
      member[i, list(g)] = True
    if np.any(np.isinf(s[member])):
      raise ValueError("scores must be finite or NaN within their groups")
    if costs is None:
      c = np.ones(G)
    else:
      c = np.asarray(costs, dtype=float)
      if c.shape != (G,):
        raise ValueError(f"costs has shape {c.shape}, expected ({G},)")
      if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError("costs must be finite and non-negative")
    self.groups, self.costs = gs, c
    self.uniform = bool(np.all(c == c[0]))
    self.usable = member & ~np.isnan(s)  # NaN: g cannot serve t.
    self.s = np.where(self.usable, s, 0.0)
    self.tol = _RTOL * max(1.0, float(np.abs(self.s).max(axis=0).sum()))
    self.ctol = _RTOL * max(1.0, float(c.sum()))
    self.cand = self._blocks()

  def _blocks(self):
    """cand[A]: the (value, 1, cost, (g,)) front of the groups serving A."""
    T, G = self.T, len(self.groups)
    n = 1 << T
    masks = np.arange(n, dtype=np.int64)
    bits = ((masks[:, None] >> np.arange(T)) & 1).astype(float)
    gmask = (self.usable * (1 << np.arange(T))).sum(axis=1).astype(np.int64)
    rank = np.empty(G, dtype=np.int64)  # Lexicographic rank of each group.
    rank[sorted(range(G), key=self.groups.__getitem__)] = np.arange(G)
    cand = [[] for _ in range(n)]
    chunk = max(1, (1 << 22) // G)  # Bounds the [subsets, G] temporaries.
    for lo in range(1, n, chunk):
      rows = masks[lo:lo + chunk]
      ok = (rows[:, None] & ~gmask[None, :]) == 0
      vals = np.where(ok, bits[lo:lo + chunk] @ self.s.T, -np.inf)
      top = vals.max(axis=1)
      if self.uniform:
        # Equal costs: the front is the best group, the smallest on a tie.
        tie = ok & (vals >= top[:, None] - self.tol)
        pick = np.where(tie, rank[None, :], G).argmin(axis=1)
        for r, a in enumerate(rows):
          if np.isfinite(top[r]):
            i = int(pick[r])
            cand[a] = [(float(vals[r, i]), 1, float(self.costs[i]),
                        (self.groups[i],))]
        continue
      for r, a in enumerate(rows):
        idx = np.flatnonzero(ok[r])
        if not len(idx):
          continue
        # Keep only groups not beaten (beyond tol) by a cheaper one, then
        # let _front settle ties.
        idx = idx[np.lexsort((rank[idx], -vals[r, idx], self.costs[idx]))]
        run = np.maximum.accumulate(vals[r, idx])
        keep = vals[r, idx] >= np.concatenate(([-np.inf], run[:-1])) - self.tol
        cand[a] = self._front([(float(vals[r, i]), 1, float(self.costs[i]),
                                (), (self.groups[i],)) for i in idx[keep]])
    return cand

  def _front(self, pts):
    """The non-dominated points of pts (value, n, cost, groups, more groups).

    A point's groups are sorted(p[3] + p[4]), built only when a tie needs
    them (that is most of the DP's time otherwise). Per network count, a
    sweep in cost order keeps each point that beats the last kept value by
    more than tol (a tie within tol keeps the smaller groups tuple); a point
    is then dropped if one with fewer networks is no costlier and no worse.
    Returns the kept points as (value, n, cost, groups).
    """
    tol, ctol = self.tol, self.ctol
    by_n = {}
    for p in pts:
      by_n.setdefault(p[1], []).append(p)
    kept = []
    for n in sorted(by_n):
      pts_n = by_n[n]
      if self.uniform:
        # Equal costs: the cost is fixed by n, so one point per n survives.
        best = pts_n[0]
        for q in pts_n[1:]:
          if q[0] > best[0] + tol or (q[0] >= best[0] - tol
                                      and _gk(q) < _gk(best)):
            best = q
        layer = [best]
      else:
        pts_n.sort(key=_VALUE, reverse=True)
        pts_n.sort(key=_COST)  # Stable: cost ascending, then value down.
        layer = []
        for q in pts_n:
          if layer and q[0] <= layer[-1][0] + tol:
            last = layer[-1]
            if (q[2] <= last[2] + ctol and q[0] >= last[0] - tol
                and _gk(q) < _gk(last)):
              layer[-1] = q
            continue
          layer.append(q)
      kept.extend([q for q in layer if not any(
          p[2] <= q[2] + ctol and p[0] >= q[0] - tol for p in kept)])
    return [(p[0], p[1], p[2], _gk(p)) for p in kept]

  def solve(self, maxn, budget):
    """The front of the full task set, within maxn blocks and the budget."""
    n = 1 << self.T
    front = [None] * n
    front[0] = [(0.0, 0, 0.0, ())]
    lim = budget + self.ctol
    cand = self.cand
    for S in range(1, n):
      low = S & -S
      rest = S ^ low
      pts = []
      sub = rest
      while True:
        A = sub | low
        sub_front = front[S ^ A]
        if sub_front:
          for cv, _, cc, cg in cand[A]:
            for pv, pn, pc, pg in sub_front:
              if pn < maxn and pc + cc <= lim:
                pts.append((pv + cv, pn + 1, pc + cc, pg, cg))
        if sub == 0:
          break
        sub = (sub - 1) & rest
      front[S] = self._front(pts)
    return front[n - 1]

  def _better(self, p, q):
    """Whether p beats q: value (within tol), fewer networks, cost, groups."""
    if abs(p[0] - q[0]) > self.tol:
      return p[0] > q[0]
    if p[1] != q[1]:
      return p[1] < q[1]
    if abs(p[2] - q[2]) > self.ctol:
      return p[2] < q[2]
    return p[3] < q[3]

  def pick(self, front, maxn, budget):
    """The best point of front within the limits, as a Selection."""
    best = None
    for p in front:
      if p[1] <= maxn and p[2] <= budget + self.ctol and (
          best is None or self._better(p, best)):
        best = p
    if best is None:
      return None
    # The DP never serves two blocks by one group at an optimum (merging
    # them is no worse and uses fewer networks); dedupe defensively.
    chosen = sorted(set(best[3]))
    index = {g: i for i, g in enumerate(self.groups)}
    assignment, value = [], 0.0
    for t in range(self.T):
      opts = [g for g in chosen if self.usable[index[g], t]]
      g = max(opts, key=lambda g: self.s[index[g], t])  # First on a tie.
      assignment.append(g)
      value += float(self.s[index[g], t])
    return Selection(value=value, groups=tuple(chosen),
                     assignment=tuple(assignment),
                     cost=float(sum(self.costs[index[g]] for g in chosen)),
                     num_networks=len(chosen))
