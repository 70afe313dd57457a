"""What a dataset is, known without building it: its spec and registry entry."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a dataset looks like, known without building it.

  Attributes:
    name: canonical dataset name, one of `dataset_names()`.
    task_names: the tasks, in label-column order.
    image_shape: (H, W, C) of the uint8 images.
    split_sizes: {"train": n, "validation": n, "test": n}.
    task_types: each task's `registry.TASK_TYPES` name.
  """

  name: str
  task_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  split_sizes: dict[str, int]
  task_types: tuple[str, ...] = ()

  @property
  def num_tasks(self) -> int:
    return len(self.task_names)


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
  """
  builder: type
  config: str
  task_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  split_sizes: tuple[int, int, int]
  task_types: tuple[str, ...] | None = None
  aliases: tuple[str, ...] = ()
