"""Label controls: label fractions, label budgets and Caruana's shuffle test.

Every function here is pure numpy and deterministic in (seed, task, example
index). Stored labels are int8 [N, T] with values 0/1, or -1 for "?" (missing);
the observed mask of stored labels is `labels >= 0` and every mask produced
here is a subset of it.

How examples are chosen. Each (seed, task) pair owns an independent generator,
`np.random.default_rng([seed, task, salt])`, which draws one uniform score per
example in index order. A task keeps its k observed examples with the smallest
scores. Consequences, all intended and tested:

  * Per-task independence: changing task k's fraction or budget never changes
    which examples task j keeps.
  * Nesting: with one seed, a smaller fraction/budget keeps a subset of the
    examples a larger one keeps, so label-efficiency curves compare nested
    label sets rather than unrelated random draws.
  * Prefix stability: numpy's PCG64 draws scores sequentially, so the score of
    example i does not depend on N; restricting training to the first N
    examples keeps every surviving example's score.

Fractions and budgets count *observed* labels: a fraction p keeps
round-half-up(p * n_observed_t) labels of task t, a budget n keeps exactly n.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

# Salts keep the streams for different purposes independent even for equal
# (seed, task) pairs; the values are arbitrary but must never change, since
# they define which examples a given seed labels.
_SALT_KEEP = 0x6C61_6265  # "labe"
_SALT_SHUFFLE = 0x7368_7566  # "shuf"


def _check_labels(labels: np.ndarray) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(
        f"labels must have shape [N, T]; got shape {labels.shape}")
  return labels


def _per_task(value, num_tasks: int, what: str) -> list:
  """Broadcasts a scalar to T entries, or checks a sequence has T entries."""
  if np.ndim(value) == 0:
    return [value] * num_tasks
  values = list(value)
  if len(values) != num_tasks:
    raise ValueError(
        f"{what} must be a scalar or have one entry per task ({num_tasks}); "
        f"got {len(values)} entries: {values!r}")
  return values


def _scores(num_examples: int, seed: int, task: int, salt: int) -> np.ndarray:
  """Uniform scores for examples 0..N-1 of one (seed, task) pair."""
  return np.random.default_rng([int(seed), int(task), salt]).random(
      num_examples)


def _keep_smallest(observed: np.ndarray, k: int, seed: int,
                   task: int) -> np.ndarray:
  """Bool [N]: the k observed examples with the smallest scores."""
  n = observed.shape[0]
  keep = np.zeros(n, dtype=bool)
  if k == 0:
    return keep
  candidates = np.flatnonzero(observed)
  scores = _scores(n, seed, task, _SALT_KEEP)[candidates]
  # A stable sort breaks (vanishingly unlikely) ties by index, deterministically.
  chosen = candidates[np.argsort(scores, kind="stable")[:k]]
  keep[chosen] = True
  return keep


def label_fraction_mask(labels: np.ndarray, fractions, seed: int) -> np.ndarray:
  """Keeps a fraction of each task's observed labels.

  Args:
    labels: int8 [N, T] stored labels (-1 = missing).
    fractions: a scalar or one value per task, each in [0, 1].
    seed: selects which labels are kept.

  Returns:
    bool [N, T]: True for kept labels; column t has exactly
    round-half-up(fractions[t] * n_observed_t) True entries.

  Raises:
    ValueError: a fraction outside [0, 1] (or NaN), or a wrong number of them.
  """
  labels = _check_labels(labels)
  observed = labels >= 0
  fracs = _per_task(fractions, labels.shape[1], "label fraction")
  mask = np.zeros(labels.shape, dtype=bool)
  for t, p in enumerate(fracs):
    p = float(p)
    if not 0.0 <= p <= 1.0:  # Also rejects NaN.
      raise ValueError(f"label fraction must be in [0, 1]; got {p} for task {t}")
    n_obs = int(observed[:, t].sum())
    # Round half up rather than Python's banker's rounding: it is the rule
    # people expect and the same on every platform.
    k = min(int(np.floor(p * n_obs + 0.5)), n_obs)
    mask[:, t] = _keep_smallest(observed[:, t], k, seed, t)
  return mask


def label_budget_mask(labels: np.ndarray, budgets, seed: int,
                      task_names: Sequence[str] | None = None) -> np.ndarray:
  """Keeps exactly budgets[t] labelled examples of task t.

  Args:
    labels: int8 [N, T] stored labels (-1 = missing).
    budgets: a scalar or one integer per task; -1 keeps all observed labels.
    seed: selects which labels are kept.
    task_names: optional names used in error messages.

  Returns:
    bool [N, T]: True for kept labels.

  Raises:
    ValueError: a budget below -1, a non-integer budget, or one larger than the
      number of observed labels of its task.
  """
  labels = _check_labels(labels)
  observed = labels >= 0
  values = _per_task(budgets, labels.shape[1], "label budget")
  mask = np.zeros(labels.shape, dtype=bool)
  for t, b in enumerate(values):
    name = task_names[t] if task_names is not None else f"task {t}"
    try:
      is_int = not isinstance(b, (bool, np.bool_, str)) and int(b) == b
    except (TypeError, ValueError, OverflowError):  # None, NaN, inf...
      is_int = False
    if not is_int:
      raise ValueError(f"label budget must be an integer; got {b!r} for {name}")
    b = int(b)
    n_obs = int(observed[:, t].sum())
    if b < -1:
      raise ValueError(
          f"label budget must be >= 0 (or -1 for all); got {b} for {name}")
    if b > n_obs:
      raise ValueError(
          f"label budget {b} for {name} exceeds its {n_obs} available labels")
    mask[:, t] = observed[:, t] if b == -1 else _keep_smallest(
        observed[:, t], b, seed, t)
  return mask


def shuffle_task_labels(labels: np.ndarray, tasks: Sequence[int],
                        seed: int) -> np.ndarray:
  """Caruana's shuffle test: permutes the listed tasks' labels across examples.

  A shuffled task keeps its label distribution (including which fraction is
  missing) but loses any relation to the inputs, so an MTL gain that survives
  the shuffle is regularisation, not transfer from that task.

  Args:
    labels: [N, T] stored labels.
    tasks: indices of the tasks to shuffle; each gets its own permutation.
    seed: selects the permutations.

  Returns:
    A new [N, T] array; columns not listed are unchanged.

  Raises:
    ValueError: a task index out of range or listed twice.
  """
  labels = _check_labels(labels)
  num_examples, num_tasks = labels.shape
  tasks = [int(t) for t in tasks]
  if len(set(tasks)) != len(tasks):
    raise ValueError(f"shuffle tasks must be distinct; got {tasks}")
  out = labels.copy()
  for t in tasks:
    if not 0 <= t < num_tasks:
      raise ValueError(
          f"shuffle task index {t} is out of range for {num_tasks} tasks")
    perm = np.random.default_rng([int(seed), t, _SALT_SHUFFLE]).permutation(
        num_examples)
    out[:, t] = labels[perm, t]
  return out


@dataclasses.dataclass(frozen=True)
class LabelControls:
  """What the training split's labels look like for one experiment.

  Attributes:
    fraction: None (all), a scalar or per-task fractions of observed labels.
    budget: None (all), a scalar or per-task numbers of labelled examples
      (-1 = all of that task). Mutually exclusive with `fraction`.
    shuffle_tasks: task indices whose labels are shuffled (Caruana's test).
      The shuffle happens before the fraction/budget masks, so a budget still
      counts labels of the shuffled task exactly.
  """
  fraction: float | Sequence[float] | None = None
  budget: int | Sequence[int] | None = None
  shuffle_tasks: Sequence[int] = ()

  def __post_init__(self):
    if self.fraction is not None and self.budget is not None:
      raise ValueError(
          "give either a label fraction or a label budget, not both; got "
          f"fraction={self.fraction!r}, budget={self.budget!r}")

  def apply(self, labels: np.ndarray, seed: int,
            task_names: Sequence[str] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """See `apply_label_controls`."""
    labels = _check_labels(labels)
    if self.shuffle_tasks:
      labels = shuffle_task_labels(labels, self.shuffle_tasks, seed)
    if self.fraction is not None:
      mask = label_fraction_mask(labels, self.fraction, seed)
    elif self.budget is not None:
      mask = label_budget_mask(labels, self.budget, seed, task_names)
    else:
      mask = labels >= 0
    labels01 = np.where(mask, labels, 0).astype(np.int8)
    return labels01, mask


def apply_label_controls(labels: np.ndarray, *, seed: int, fraction=None,
                         budget=None, shuffle_tasks: Sequence[int] = (),
                         task_names: Sequence[str] | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
  """Applies shuffle, then fraction or budget, to stored training labels.

  Used for the TRAIN split only; validation and test stay fully labelled.

  Args:
    labels: int8 [N, T] stored labels (-1 = missing).
    seed: the run's seed; the same seed always gives the same labels and mask.
    fraction: see `LabelControls`.
    budget: see `LabelControls`.
    shuffle_tasks: see `LabelControls`.
    task_names: optional names used in error messages.

  Returns:
    (labels01, mask): int8 [N, T] labels in {0, 1} with unkept/missing entries
    set to 0, and bool [N, T], True where the label is kept and observed.
  """
  controls = LabelControls(fraction=fraction, budget=budget,
                           shuffle_tasks=tuple(shuffle_tasks))
  return controls.apply(labels, seed, task_names)


def apply_typed_label_controls(labels: np.ndarray, observed: np.ndarray, *,
                               seed: int, fraction=None, budget=None,
                               shuffle_tasks: Sequence[int] = (),
                               task_names: Sequence[str] | None = None
                               ) -> tuple[np.ndarray, np.ndarray]:
  """`apply_label_controls` for labels of any task type.

  Regression values may be negative, so which labels are observed is given
  explicitly (`mtljax.tasks.types.observed`) rather than read as labels >= 0.
  For binary labels stored as int8 (-1 = "?") the result equals
  `apply_label_controls` exactly, as float32.

  Args:
    labels: [N, T] stored labels (class index or value; "?" = -1 for
      classification, NaN for regression).
    observed: bool [N, T], which stored labels are not "?".
    seed, fraction, budget, shuffle_tasks, task_names: see
      `apply_label_controls`.

  Returns:
    (labels float32 [N, T] with unkept and missing entries set to 0, mask bool
    [N, T]: True where the label is kept and observed).
  """
  labels = _check_labels(labels)
  observed = np.asarray(observed, bool)
  # -1 where "?", 0 elsewhere: what the mask functions read as stored labels.
  proxy = np.where(observed, 0, -1).astype(np.int8)
  controls = LabelControls(fraction=fraction, budget=budget,
                           shuffle_tasks=tuple(shuffle_tasks))
  if controls.shuffle_tasks:
    # `apply` shuffles the proxy with the same permutation per (seed, task):
    # a shuffled task keeps its values together with its share of "?".
    labels = shuffle_task_labels(labels, controls.shuffle_tasks, seed)
  _, mask = controls.apply(proxy, seed, task_names)
  with np.errstate(invalid="ignore"):
    return np.where(mask, labels, 0).astype(np.float32), mask
