"""Checks of a config against its dataset's spec, before anything trains.

    preflight.check(config)                 # raises ConfigError naming the field
    controls = preflight.label_controls(config, spec)

`config.validate` checks each field on its own. What can only be judged
against the dataset (how many tasks it has, how large its splits are) is
checked here, from `data.dataset_spec`, which needs no build and no I/O. A
sweep runs this for every point before the first one trains, so a bad point 7
fails in seconds, not after an hour of points 1-6.
"""

from __future__ import annotations

import numpy as np

from mtljax import config as config_lib
from mtljax import data as data_lib
from mtljax import models
from mtljax.data import sources
from mtljax.tasks import types as task_types

ConfigError = config_lib.ConfigError


def _per_task_values(field: str, values, num_tasks: int, names):
  """-1 means 'all'; one value broadcasts; else exactly T values."""
  if all(v == -1 for v in values):
    return None
  if len(values) not in (1, num_tasks):
    raise ConfigError(
        f"config.{field} must have 1 or {num_tasks} values (tasks: "
        f"{', '.join(names)}); got {len(values)}: {tuple(values)!r}")
  return values[0] if len(values) == 1 else tuple(values)


def dataset_spec(config) -> data_lib.DatasetSpec:
  """The spec of the config's dataset at its split sizes.

  No I/O for the datasets that mtljax builds; a "tfds:" dataset's spec is
  read from its prepared files' metadata.
  """
  try:
    return sources.dataset_spec(config.data.name,
                                tuple(config.data.split_sizes) or None,
                                config_lib.tfds_options(config),
                                config.data.data_dir or None)
  except data_lib.DataError as e:
    raise ConfigError(f"config.data.name={config.data.name!r}: {e}") from None


def check_task_types(config, spec) -> None:
  """Missing-label policies and the selection metric fit the task types."""
  for policy in config.loss.missing_policies:
    bad = [t for t in spec.tasks
           if policy not in t.task_type.missing_policies]
    if bad:
      raise ConfigError(
          f"config.loss.missing_policies has {policy!r}, which is not defined "
          f"for task {bad[0].name!r} ({bad[0].type}; its policies: "
          f"{bad[0].task_type.missing_policies}): a \"?\" label of a "
          f"{bad[0].type} task has no negative value")
  metric = config.train.selection_metric
  if metric not in ("", task_types.PRIMARY):
    bad = [t for t in spec.tasks if metric not in t.metrics]
    if bad:
      raise ConfigError(
          f"config.train.selection_metric={metric!r} is not a metric of task "
          f"{bad[0].name!r} ({bad[0].type}: {bad[0].metrics}); use "
          "\"primary\" (each task's own primary metric) for mixed task types")


def num_train(config, spec) -> int:
  """Training examples the run uses (config.data.train_examples, -1: all)."""
  size = spec.split_sizes["train"]
  n = config.data.train_examples
  return size if n == -1 else n


def label_controls(config, spec) -> dict:
  """The pipeline's label-control arguments, checked against the spec."""
  names, t = spec.task_names, len(spec.task_names)
  frac = _per_task_values("data.label_fraction", config.data.label_fraction,
                          t, names)
  if frac is not None:
    frac = (1.0 if frac == -1 else frac) if np.ndim(frac) == 0 else tuple(
        1.0 if f == -1 else f for f in frac)
  budget = _per_task_values("data.label_budget", config.data.label_budget, t,
                            names)
  if frac is not None and budget is not None:
    raise ConfigError(
        "set config.data.label_fraction or config.data.label_budget, not both")
  if budget is not None:
    n = num_train(config, spec)
    per_task = (budget,) * t if np.ndim(budget) == 0 else budget
    for name, b in zip(names, per_task):
      if b > n:
        raise ConfigError(
            f"config.data.label_budget={b} for task {name!r} exceeds the {n} "
            "training examples (config.data.train_examples="
            f"{config.data.train_examples})")
  for k in config.data.shuffle_tasks:
    if not 0 <= k < t:
      raise ConfigError(
          f"config.data.shuffle_tasks has task index {k}; {spec.name} has "
          f"tasks 0..{t - 1} ({', '.join(names)})")
  return dict(label_fraction=frac, label_budget=budget,
              shuffle_tasks=tuple(config.data.shuffle_tasks))


def check(config) -> data_lib.DatasetSpec:
  """Checks a validated config against its dataset; returns the spec.

  Raises:
    ConfigError: naming the field and value that the dataset rules out.
  """
  spec = dataset_spec(config)
  t = spec.num_tasks
  size = spec.split_sizes["train"]
  if config.data.train_examples > size:
    raise ConfigError(
        f"config.data.train_examples={config.data.train_examples} exceeds the "
        f"{size} examples of {spec.name}'s train split")
  n = num_train(config, spec)
  if config.train.batch_size > n:
    raise ConfigError(
        f"config.train.batch_size={config.train.batch_size} exceeds the {n} "
        "training examples (config.data.train_examples="
        f"{config.data.train_examples})")
  bad = [k for k in config.stl_tasks if k >= t]
  if bad:
    raise ConfigError(
        f"config.stl_tasks={tuple(config.stl_tasks)!r}: task index {bad[0]} is "
        f"out of range for {spec.name}, whose tasks are 0..{t - 1} "
        f"({', '.join(spec.task_names)})")
  bad = [k for k in config.train.selection_tasks if k >= t]
  if bad:
    raise ConfigError(
        f"config.train.selection_tasks={tuple(config.train.selection_tasks)!r}"
        f": task index {bad[0]} is out of range for {spec.name}, whose tasks "
        f"are 0..{t - 1} ({', '.join(spec.task_names)})")
  for name, groups in config.partitions:
    bad = [k for g in groups for k in g if k >= t]
    if bad:
      raise ConfigError(
          f"config.partitions[{name!r}]: task index {bad[0]} is out of range "
          f"for {spec.name}, whose tasks are 0..{t - 1} "
          f"({', '.join(spec.task_names)})")
  if config.grouping.groups == "all" and t > config.grouping.max_tasks:
    raise ConfigError(
        f"config.grouping.groups='all' trains every one of the 2^{t} - 1 = "
        f"{2 ** t - 1} task groups of {spec.name}, above config.grouping."
        f"max_tasks={config.grouping.max_tasks} tasks; use groups='pairs' "
        "(Standley's pairwise estimate) or grouping.affinity_every (TAG), or "
        "raise grouping.max_tasks (a GPU job)")
  label_controls(config, spec)
  check_task_types(config, spec)
  # Build the network abstractly (no allocation): a component's own check
  # of its settings (a CNN pool of "median") surfaces now, not at step 0.
  try:
    models.graphdef(config.model, spec.image_shape, spec.tasks)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.model (encoder {config.model.encoder!r}): "
                      f"{e}") from None
  return spec


def resolve(config):
  """Checks `config` (see `check`) and fills in what depends on the dataset.

  `train.selection_metric=""` becomes the tasks' common primary metric (AUC
  for binary tasks; "primary" for mixed types), and `data.version=""` the
  data's identity (for arrays: their content hash), so that results, workdir
  ownership and resume compare what was actually used.

  Returns:
    (config, spec): a resolved copy and the dataset's spec.
  """
  spec = check(config)
  config = config.copy_and_resolve_references()
  if not config.train.selection_metric:
    config.train.selection_metric = task_types.primary_metric(spec.task_types)
  try:
    version = sources.dataset_version(config.data.name,
                                      config_lib.tfds_options(config),
                                      config.data.data_dir or None)
  except data_lib.DataError as e:
    raise ConfigError(f"config.data.name={config.data.name!r}: {e}") from None
  if config.data.version and config.data.version != version:
    raise ConfigError(
        f"config.data.version={config.data.version!r} but {spec.name} is "
        f"{version!r} here (other data under the same name)")
  config.data.version = version
  return config, spec
