"""Task types: what a task's labels are, its loss, metrics and primary metric.

    task_type = registry.TASK_TYPES.get("binary")
    task_type.primary_metric, task_type.higher_is_better   # "auc", True

Every task of the built-in datasets is binary (one sigmoid logit, the
lecture's masked logistic loss). The type names the metric that model
selection and reports use by default, so no layer hard-codes "auc".
"""

from __future__ import annotations

import dataclasses

from mtljax import registry


@dataclasses.dataclass(frozen=True)
class TaskType:
  """A kind of task.

  Attributes:
    name: the registry name.
    num_outputs: logits per task.
    metrics: the metrics computed per task (over observed labels only).
    primary_metric: the default selection and report metric.
    higher_is_better: {metric: bool} for every metric.
  """
  name: str
  num_outputs: int
  metrics: tuple[str, ...]
  primary_metric: str
  higher_is_better: dict

  def __post_init__(self):
    if self.primary_metric not in self.metrics:
      raise ValueError(f"task type {self.name!r}: primary metric "
                       f"{self.primary_metric!r} is not one of {self.metrics}")


BINARY = registry.TASK_TYPES.register("binary", TaskType(
    name="binary", num_outputs=1, metrics=("auc", "ap", "acc", "loss"),
    primary_metric="auc",
    higher_is_better={"auc": True, "ap": True, "acc": True, "loss": False}))


def primary_metric(type_names) -> str:
  """The selection metric of a set of tasks (all of one type for now)."""
  kinds = {registry.TASK_TYPES.get(t).primary_metric for t in type_names}
  if len(kinds) != 1:
    raise ValueError(f"tasks of types {sorted(set(type_names))} have no "
                     "common primary metric")
  return kinds.pop()
