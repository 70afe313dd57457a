"""What a dataset is, known without building it: its spec and registry entry."""

from __future__ import annotations

import dataclasses

from mtljax.tasks import types as task_types_lib


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a dataset looks like, known without building it.

  Attributes:
    name: canonical dataset name, one of `dataset_names()`.
    task_names: the tasks, in label-column order.
    image_shape: (H, W, C) of the uint8 images.
    split_sizes: {"train": n, "validation": n, "test": n}.
    task_types: each task's `registry.TASK_TYPES` name.
    tasks: each task's `mtljax.tasks.Task` (type, classes, loss); derived
      from `task_types` (or all binary) when not given.
  """

  name: str
  task_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  split_sizes: dict[str, int]
  task_types: tuple[str, ...] = ()
  tasks: tuple = ()

  def __post_init__(self):
    tasks = tuple(self.tasks) or tuple(
        task_types_lib.Task(n, t) for n, t in zip(
            self.task_names, self.task_types or ("binary",) * len(
                self.task_names)))
    object.__setattr__(self, "tasks", tasks)
    object.__setattr__(self, "task_types", tuple(t.type for t in tasks))
    object.__setattr__(self, "task_names", tuple(t.name for t in tasks))

  @property
  def num_tasks(self) -> int:
    return len(self.task_names)

  @property
  def num_outputs(self) -> int:
    """Head outputs in all: Σ over tasks of 1 (binary, regression) or K."""
    return sum(t.num_outputs for t in self.tasks)


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  """A registered dataset (`registry.DATASETS`): its builder and its spec.

  Attributes:
    builder: the `tfds.core.GeneratorBasedBuilder` class that writes it.
    config: the builder config (`BUILDER_CONFIGS` name) of the default build.
    task_names: the tasks, in label-column order.
    image_shape: (H, W, C).
    split_sizes: default (train, validation, test) sizes.
    task_types: one `registry.TASK_TYPES` name per task (default: binary).
    aliases: other names that mean this dataset.
    tasks: the `mtljax.tasks.Task`s (overrides task_names/task_types).
    fixed_sizes: the split sizes cannot change (data registered from arrays).
  """
  builder: type
  config: str
  task_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  split_sizes: tuple[int, int, int]
  task_types: tuple[str, ...] | None = None
  aliases: tuple[str, ...] = ()
  tasks: tuple | None = None
  fixed_sizes: bool = False
