"""Task types and tasks: what a task's labels are, its loss, metrics and outputs.

    tasks = [Binary("cat"), Multiclass("digit", num_classes=10),
             Regression("age", loss="huber")]
    [t.num_outputs for t in tasks]                      # [1, 10, 1]
    registry.TASK_TYPES.get("multiclass").primary_metric  # "acc"

Labels of every type live in one float array [N, T], one column per task:
  * binary: 0 or 1; "?" is -1.
  * multiclass: the class index 0..K-1; "?" is -1.
  * regression: the target value; "?" is NaN.
`observed(tasks, labels)` gives the [N, T] mask of labels that are not "?",
and `check_labels` rejects everything else (a class index >= K, an inf
target, a binary 0.5), naming the task and the value.

Each type names its primary metric (all are higher-is-better, so a mean over
mixed types is meaningful: `PRIMARY`, the model-selection scalar of an MTL
network over mixed types).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from mtljax import registry

# The selection scalar over mixed types: the mean over a run's tasks of each
# task's own primary metric (AUC, accuracy, R²; all higher-is-better).
PRIMARY = "primary"


@dataclasses.dataclass(frozen=True)
class TaskType:
  """A kind of task.

  Attributes:
    name: the registry name.
    metrics: the metrics computed per task (over observed labels only).
    primary_metric: the default selection and report metric.
    higher_is_better: {metric: bool} for every metric.
    missing_policies: the `loss.missing_policy` values that make sense.
  """
  name: str
  metrics: tuple[str, ...]
  primary_metric: str
  higher_is_better: dict
  missing_policies: tuple[str, ...] = ("mask", "drop")

  def __post_init__(self):
    if self.primary_metric not in self.metrics:
      raise ValueError(f"task type {self.name!r}: primary metric "
                       f"{self.primary_metric!r} is not one of {self.metrics}")
    if not self.higher_is_better[self.primary_metric]:
      raise ValueError(f"task type {self.name!r}: the primary metric must be "
                       "higher-is-better (the mixed-type selection scalar "
                       "averages primaries)")


BINARY = registry.TASK_TYPES.register("binary", TaskType(
    name="binary", metrics=("auc", "ap", "acc", "loss"), primary_metric="auc",
    higher_is_better={"auc": True, "ap": True, "acc": True, "loss": False},
    missing_policies=("mask", "negative", "drop")))
MULTICLASS = registry.TASK_TYPES.register("multiclass", TaskType(
    name="multiclass", metrics=("acc", "top5", "macro_f1", "loss"),
    primary_metric="acc",
    higher_is_better={"acc": True, "top5": True, "macro_f1": True,
                      "loss": False}))
REGRESSION = registry.TASK_TYPES.register("regression", TaskType(
    name="regression", metrics=("r2", "mse", "mae"), primary_metric="r2",
    higher_is_better={"r2": True, "mse": False, "mae": False}))

REGRESSION_LOSSES = ("mse", "huber", "l1")


@dataclasses.dataclass(frozen=True)
class Task:
  """One task of a dataset: its name, type and type-specific settings.

  Attributes:
    name: the task's name (unique within a dataset).
    type: a `registry.TASK_TYPES` name.
    num_classes: K for multiclass (>= 2); None otherwise.
    loss: regression only: "mse" (default), "huber" or "l1".
    delta: regression "huber" only: where the loss turns linear.
  """
  name: str
  type: str = "binary"
  num_classes: int | None = None
  loss: str = ""
  delta: float = 1.0

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise ValueError(f"a task name must be a non-empty string; got "
                       f"{self.name!r}")
    if self.type not in registry.TASK_TYPES:
      raise ValueError(f"task {self.name!r}: type {self.type!r} is not a "
                       "registered task type; registered: "
                       f"{', '.join(registry.TASK_TYPES.names())}")
    if self.type == "multiclass":
      k = self.num_classes
      if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"task {self.name!r}: num_classes must be an integer "
                         f">= 2; got {k!r}")
      object.__setattr__(self, "num_classes", int(k))
    elif self.num_classes is not None:
      raise ValueError(f"task {self.name!r} ({self.type}): num_classes is only "
                       f"for multiclass tasks; got {self.num_classes!r}")
    if self.type == "regression":
      loss = self.loss or "mse"
      if loss not in REGRESSION_LOSSES:
        raise ValueError(f"task {self.name!r}: loss must be one of "
                         f"{REGRESSION_LOSSES}; got {self.loss!r}")
      object.__setattr__(self, "loss", loss)
      if not (np.isfinite(self.delta) and self.delta > 0):
        raise ValueError(f"task {self.name!r}: delta must be > 0; got "
                         f"{self.delta!r}")
      if loss != "huber" and self.delta != 1.0:
        raise ValueError(f"task {self.name!r}: delta is the Huber loss's; "
                         f"it means nothing for loss={loss!r}")
    elif self.loss:
      raise ValueError(f"task {self.name!r} ({self.type}): loss is only for "
                       f"regression tasks; got {self.loss!r}")

  @property
  def num_outputs(self) -> int:
    """Logits (or predictions) of this task's head."""
    return self.num_classes if self.type == "multiclass" else 1

  @property
  def task_type(self) -> TaskType:
    return registry.TASK_TYPES.get(self.type)

  @property
  def metrics(self) -> tuple[str, ...]:
    """This task's metrics (multiclass: top-5 only where K > 5)."""
    names = self.task_type.metrics
    if self.type == "multiclass" and self.num_classes <= 5:
      names = tuple(m for m in names if m != "top5")
    return names

  @property
  def primary_metric(self) -> str:
    return self.task_type.primary_metric

  def higher_is_better(self, metric: str) -> bool:
    return self.task_type.higher_is_better[metric]

  def to_json(self) -> dict:
    """The task as results.json records it (`from_json` reads it back)."""
    out = {"name": self.name, "type": self.type}
    if self.num_classes is not None:
      out["num_classes"] = self.num_classes
    if self.type == "regression":
      out["loss"] = self.loss
      if self.loss == "huber":
        out["delta"] = float(self.delta)
    return out

  @classmethod
  def from_json(cls, d: dict) -> "Task":
    return cls(**d)


def Binary(name: str) -> Task:  # pylint: disable=invalid-name
  """A binary task: one sigmoid logit, the lecture's masked logistic loss."""
  return Task(name, "binary")


def Multiclass(name: str, num_classes: int) -> Task:  # pylint: disable=invalid-name
  """A K-way task: K logits, masked softmax cross-entropy."""
  return Task(name, "multiclass", num_classes=num_classes)


def Regression(name: str, loss: str = "mse",  # pylint: disable=invalid-name
               delta: float = 1.0) -> Task:
  """A scalar regression task: masked MSE (or Huber, L1)."""
  return Task(name, "regression", loss=loss, delta=delta)


def check_tasks(tasks: Sequence[Task]) -> tuple[Task, ...]:
  """Validates a task list: Task objects with distinct names."""
  tasks = tuple(tasks)
  if not tasks:
    raise ValueError("a dataset needs at least one task")
  for t in tasks:
    if not isinstance(t, Task):
      raise ValueError(f"tasks must be mtljax.tasks.Binary/Multiclass/"
                       f"Regression objects; got {t!r}")
  names = [t.name for t in tasks]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise ValueError(f"task names must be distinct; repeated: {dup}")
  return tasks


def output_table(tasks: Sequence[Task]) -> np.ndarray:
  """int32 [O]: the task index of each output column (O = Σ num_outputs).

  The heads are one matmul over all O outputs; this fixed table says which
  task each output belongs to (tasks' outputs are contiguous, in task order).
  """
  return np.repeat(np.arange(len(tasks)),
                   [t.num_outputs for t in tasks]).astype(np.int32)


def output_offsets(tasks: Sequence[Task]) -> np.ndarray:
  """int [T + 1]: task t's outputs are columns offsets[t]:offsets[t + 1]."""
  return np.concatenate([[0], np.cumsum([t.num_outputs for t in tasks])])


def observed(tasks: Sequence[Task], labels: np.ndarray) -> np.ndarray:
  """bool [..., T]: which labels are observed (not "?").

  Classification: "?" is -1. Regression: "?" is NaN. Anything else counts
  as observed, so that an invalid value (a NaN class, a -2) is rejected by
  `check_labels` rather than silently masked.
  """
  labels = np.asarray(labels)
  is_reg = np.array([t.type == "regression" for t in tasks])
  if labels.dtype.kind in "iub":
    return ~(~is_reg & (labels == -1))
  return ~np.where(is_reg, np.isnan(labels), labels == -1)


def check_labels(tasks: Sequence[Task], labels: np.ndarray, where: str = "",
                 first: int = 0, indices=None) -> None:
  """Raises ValueError at the first label that is neither valid nor "?".

  Args:
    tasks: the T tasks, in column order.
    labels: [N, T] stored labels.
    where: what is being checked, for the message.
    first: the index of the first row (for the message).
    indices: or the example index of every row (for the message).

  Raises:
    ValueError: a label array whose column count differs from the task list,
      or the first bad value: binary not in {0, 1}, multiclass not an integer
      in [0, K), an infinite regression target.
  """
  labels = np.asarray(labels)
  prefix = f"{where}: " if where else ""
  if labels.ndim != 2 or labels.shape[1] != len(tasks):
    raise ValueError(
        f"{prefix}labels must have shape [N, {len(tasks)}] (one column per "
        f"task: {[t.name for t in tasks]}); got shape {labels.shape}")
  values = labels.astype(np.float64)
  obs = observed(tasks, values)
  for j, t in enumerate(tasks):
    col, o = values[:, j], obs[:, j]
    if t.type == "binary":
      bad = o & ~((col == 0) | (col == 1))
      want = "0 or 1 (or -1 for '?')"
    elif t.type == "multiclass":
      bad = o & ~((col == np.floor(col)) & (col >= 0) & (col < t.num_classes))
      want = (f"a class index in [0, {t.num_classes}) (or -1 for '?')")
    else:
      bad = o & ~np.isfinite(col)
      want = "a finite value (or NaN for '?')"
    if bad.any():
      i = int(np.flatnonzero(bad)[0])
      example = first + i if indices is None else int(indices[i])
      raise ValueError(
          f"{prefix}label value {float(col[i]):g} at example {example}, task "
          f"{t.name!r} ({t.type}) is not {want}; {int(bad.sum())} such "
          "label(s) in all")


def primary_metric(type_names) -> str:
  """The default selection metric of a set of tasks.

  Tasks of one type: that type's primary metric ("auc" for binary, as
  before). Mixed types: `PRIMARY`, the mean of each task's own primary.
  """
  kinds = {registry.TASK_TYPES.get(t).primary_metric for t in type_names}
  return kinds.pop() if len(kinds) == 1 else PRIMARY
