"""Validation of the train feed's arguments: counts, fractions, budgets, tasks.

Each function names the argument and the value it rejects (a DataError).
"""

from __future__ import annotations

import numpy as np

from mtljax.data import builders
from mtljax.data.builders import DataError


def count(value, what: str, limit: int, name: str, split: str) -> int:
  """Validates an example count: None or -1 means all `limit` examples."""
  if value is None or (not isinstance(value, bool) and value == -1):
    return limit
  if not builders.is_positive_int(value):
    raise DataError(f"{what} must be a positive integer (or -1/None for all); "
                    f"got {value!r}")
  if value > limit:
    raise DataError(f"{what}={value} exceeds the {limit} examples of "
                    f"{name} split {split!r}")
  return int(value)


def one_per_task(field, value, task_names) -> list:
  """A scalar or a 1-sequence broadcasts to every task; else one per task."""
  values = [value] if np.ndim(value) == 0 else list(value)
  if len(values) == 1:
    values = values * len(task_names)
  if len(values) != len(task_names):
    raise DataError(f"{field} needs one value or one per task "
                    f"({len(task_names)}); got {value!r}")
  return values


def per_task_fraction(label_fraction, task_names):
  """None / scalar / per-task fractions, with -1 meaning "all" -> labels.py."""
  if label_fraction is None:
    return None
  values = one_per_task("label_fraction", label_fraction, task_names)
  out = []
  for t, v in zip(task_names, values):
    try:
      v = float(v)
    except (TypeError, ValueError):
      raise DataError(f"label_fraction for {t!r} must be a number; "
                      f"got {v!r}") from None
    if v == -1.0:
      v = 1.0  # Keeping a fraction 1 of the observed labels keeps all.
    elif not 0.0 <= v <= 1.0:  # Also rejects NaN.
      raise DataError(f"label_fraction for {t!r} must be in [0, 1] (or -1 for "
                      f"all); got {v}")
    out.append(v)
  return None if all(v == 1.0 for v in out) else out


def per_task_budget(label_budget, task_names):
  if label_budget is None:
    return None
  values = one_per_task("label_budget", label_budget, task_names)
  return None if all(not isinstance(v, bool) and v == -1 for v in values) \
      else values


def task_indices(shuffle_tasks, task_names) -> tuple[int, ...]:
  """Task names or indices -> indices."""
  out = []
  if isinstance(shuffle_tasks, (str, int, np.integer)):
    shuffle_tasks = (shuffle_tasks,)
  for t in shuffle_tasks:
    if isinstance(t, str):
      if t not in task_names:
        raise DataError(f"shuffle_tasks: unknown task {t!r}; tasks: "
                        f"{tuple(task_names)}")
      out.append(task_names.index(t))
    elif isinstance(t, (int, np.integer)) and 0 <= t < len(task_names):
      out.append(int(t))
    else:
      raise DataError(f"shuffle_tasks: {t!r} is not a task name or an index "
                      f"in [0, {len(task_names)})")
  if len(set(out)) != len(out):
    raise DataError(f"shuffle_tasks lists a task twice: {tuple(shuffle_tasks)}")
  return tuple(out)


