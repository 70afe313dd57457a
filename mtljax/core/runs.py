"""Runs, task groups and arms: how one config becomes stacked runs.

MTL and STL are one mechanism. A *task group* is a [T] 0/1 mask; a network
trained on a group only ever sees the labels of its tasks. MTL is the group of
all tasks; STL is T groups of one task each. A *program* is everything that
shares one network shape (one width) and so one compiled step::

    programs = build_programs(config, image_shape, num_tasks)
    for prog in programs:
      specs = prog.specs(seeds)   # {"seed": [S, G], "task_mask": [S, G, T],
                                  #  "learning_rate": [S, G]}

Within a program the runs form an [S, G] grid: S seeds × G (group, learning
rate) pairs. Every run of seed s sees seed s's batches and label masks and
starts from seed s's initial weights, so MTL and STL are paired by seed in
data order, label masks and initialisation.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Sequence

import numpy as np

from mtljax import models
from mtljax import config as config_lib
from mtljax.config import ConfigError
from mtljax.config import checks as config_checks

# Order defines the integer code a run's spec carries (see step.py).
MISSING_POLICIES = config_lib.MISSING_POLICIES


@dataclasses.dataclass(frozen=True)
class Group:
  """One network's role: the arm it belongs to and the tasks it learns.

  An *arm* is a partition of (some of) the tasks into groups, one network
  per group: MTL is one group of all tasks, STL one group per task, and any
  other partition (`config.partitions`) is the same mechanism.

  Attributes:
    arm: results label, e.g. "mtl", "stl", "stl_matched" (+ config suffix).
    task_mask: [T] tuple of 0/1.
    learning_rate: this run's (peak) learning rate.
    missing_policy: how the run treats "?" labels (config.MISSING_POLICIES).
  """
  arm: str
  task_mask: tuple
  learning_rate: float
  missing_policy: str = "mask"
  # This run's own method hyperparameters, (kind, name, value) triples that
  # override the program's (a point of a method arm's grid).
  hparams: tuple = ()
  # "grouping": a network of the grouping search (config.grouping), read by
  # the report's grouping section rather than compared as an arm.
  role: str = ""

  @property
  def tasks(self) -> list[int]:
    return [t for t, m in enumerate(self.task_mask) if m]

  @property
  def mode(self) -> str:
    """"mtl" (every task), "stl" (one task) or "group" (some tasks)."""
    n = len(self.tasks)
    return ("mtl" if n == len(self.task_mask) else "stl" if n == 1
            else "group")


def arm_mode(groups: Sequence[Group]) -> str:
  """An arm's kind, for results: "mtl", "stl" or "partition"."""
  if len(groups) == 1 and groups[0].mode == "mtl":
    return "mtl"
  return "stl" if all(g.mode == "stl" for g in groups) else "partition"


@dataclasses.dataclass(frozen=True)
class Program:
  """Runs that share one network shape, trained by one compiled step."""
  name: str
  model_cfg: Any
  groups: tuple[Group, ...]
  # Static per-task weights (loss.task_weights; (): none) and the method's
  # per-run float hyperparameters as (kind, name, value) triples.
  task_weights: tuple = ()
  method_hparams: tuple = ()
  # The method its step applies (a method_step.MethodSpec), None: the
  # classic step. Only programs of multi-task groups have one.
  method: Any = None

  @property
  def uses_method(self) -> bool:
    return self.method is not None and self.method.active

  @property
  def num_groups(self) -> int:
    return len(self.groups)

  def specs(self, seeds: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-run constants, [S, G] leading axes (see module docstring)."""
    s, g = len(seeds), self.num_groups
    seed = np.broadcast_to(np.asarray(seeds, np.int32)[:, None], (s, g))
    mask = np.asarray([gr.task_mask for gr in self.groups], np.float32)
    lr = np.asarray([gr.learning_rate for gr in self.groups], np.float32)
    policy = np.asarray([MISSING_POLICIES.index(gr.missing_policy)
                         for gr in self.groups], np.int32)
    out = {"seed": np.array(seed),
           "task_mask": np.broadcast_to(mask, (s,) + mask.shape).copy(),
           "learning_rate": np.broadcast_to(lr, (s, g)).copy(),
           "missing_policy": np.broadcast_to(policy, (s, g)).copy()}
    if self.task_weights:
      out["task_weights"] = np.broadcast_to(
          np.asarray(self.task_weights, np.float32),
          (s, g, len(self.task_weights))).copy()
    # Per run: the program's value, or the run's own (a grid point).
    values = {(kind, name): [value] * g
              for kind, name, value in self.method_hparams}
    for j, gr in enumerate(self.groups):
      for kind, name, value in gr.hparams:
        values.setdefault((kind, name), [value] * g)[j] = value
    hparams: dict = {}
    for (kind, name), vals in values.items():
      hparams.setdefault(kind, {})[name] = np.broadcast_to(
          np.asarray(vals, np.float32), (s, g)).copy()
    if hparams:
      out["method"] = hparams
    return out


def _groups(arm: str, partition, num_tasks: int, lrs, policies
            ) -> list[Group]:
  """An arm's groups: one per (task group, learning rate, missing policy)."""
  masks = [tuple(int(t in part) for t in range(num_tasks))
           for part in partition]
  out = []
  for policy in policies:
    name = arm if policy == "mask" else f"{arm}_{policy}"
    out += [Group(name, m, float(lr), policy) for m in masks for lr in lrs]
  return out


def partition_of(mode: str, num_tasks: int, stl_tasks=()) -> list[tuple]:
  """The task partition of a named arm: MTL one group, STL one per task."""
  if mode == "mtl":
    return [tuple(range(num_tasks))]
  return [(k,) for k in (stl_tasks or range(num_tasks))]


def build_programs(config: Any, image_shape, num_tasks: int,
                   tasks=None) -> list[Program]:
  """The programs (one per distinct width) that a config trains.

  Args:
    config: a validated config.
    image_shape: (H, W, C).
    num_tasks: T.
    tasks: the T Tasks (heads sized per task, for "stl_matched"); None: all
      one output.

  Returns:
    Programs in a fixed order; "mtl", "stl" and `config.partitions` share
    the config's width (one program), "stl_matched" gets the width whose T
    networks together have about as many parameters as one MTL network.
  """
  lrs = config.optimizer.learning_rates
  stl_tasks = tuple(config.get("stl_tasks", ()))
  bad = [k for k in stl_tasks if k >= num_tasks]
  if bad:
    raise ConfigError(f"config.stl_tasks={stl_tasks!r}: task index {bad[0]} "
                      f"is out of range for a dataset with {num_tasks} tasks")
  by_width: dict[int, list[Group]] = {}
  policies = config.loss.missing_policies
  arms = []
  for mode in config.modes:
    if mode == "stl_matched":    # equal parameters: narrower STL networks
      width = models.matched_stl_width(config.model, image_shape,
                                       tasks or num_tasks)
    elif mode == "mtl_matched":  # equal compute: a wider MTL network
      width = models.matched_mtl_width(config.model, image_shape,
                                       tasks or num_tasks)
    else:
      width = config.model.width
    arms.append((mode + config.arm_suffix, width,
                 partition_of("mtl" if mode.startswith("mtl") else "stl",
                              num_tasks, stl_tasks)))
  for name, parts in config.get("partitions", ()):
    arms.append((name + config.arm_suffix, config.model.width,
                 [tuple(p) for p in parts]))
  searched = grouping_arms(config, num_tasks, arms)
  for arm, width, partition in arms + searched:
    role = "grouping" if (arm, width, partition) in searched else ""
    # The search's networks use the first missing-label policy only: the
    # report reads each group once (with MTL's and STL's of that policy).
    by_width.setdefault(width, []).extend(
        dataclasses.replace(gr, role=role) for gr in
        _groups(arm, partition, num_tasks, lrs,
                policies[:1] if role else policies))
  task_weights = tuple(float(w) for w in config.loss.get("task_weights", ()))
  if task_weights and len(task_weights) != num_tasks:
    raise ConfigError(f"config.loss.task_weights={task_weights!r} has "
                      f"{len(task_weights)} weight(s) for a dataset with "
                      f"{num_tasks} tasks: give one per task")
  from mtljax.core import method_step  # pylint: disable=g-import-not-at-top
  main = method_step.method_spec(config) if "method" in config else None
  arch = config.model.get("arch", "hps")
  for name, m in [("config.method", main)] + [
      (f"config.method_arms[{n!r}]", method_step.method_spec(
          config, config_checks.first_of_grids(o)))
      for n, o in config.get("method_arms", ())]:
    _check_rep_grad(name, m, arch)
  programs = []
  for width, groups in by_width.items():
    model_cfg = config.model.copy_and_resolve_references()
    model_cfg.width = width
    parts = [(f"w{width}", tuple(groups), None)]
    if main is not None and main.active:
      # The method acts on the multi-task groups only: single-task groups
      # (STL) keep the classic step in a program of their own, so a method
      # cannot change them, bit for bit.
      single = tuple(g for g in groups if len(g.tasks) == 1)
      multi = tuple(g for g in groups if len(g.tasks) > 1)
      parts = [(f"w{width}", single, None),
               (f"w{width}_{main.tag}", multi, main)]
    programs += [Program(name, model_cfg, gs, task_weights,
                         m.hparams if m else (), m)
                 for name, gs, m in parts if gs]
  for name, overrides in config.get("method_arms", ()):
    m = method_step.method_spec(config,
                                config_checks.first_of_grids(overrides))
    model_cfg = config.model.copy_and_resolve_references()
    groups = []
    # A hyperparameter grid: one arm per point, all in this one program
    # (the values are per-run), like the learning-rate grid.
    points = config_checks.hparam_grid(overrides)
    for point in points:
      arm = name if len(points) == 1 else name + "_" + "_".join(
          f"{k}{v:g}" for _, k, v in point)
      groups += [dataclasses.replace(gr, hparams=point) for gr in _groups(
          arm + config.arm_suffix, [tuple(range(num_tasks))], num_tasks, lrs,
          policies)]
    programs.append(Program(f"w{model_cfg.width}_{name}", model_cfg,
                            tuple(groups), task_weights,
                            m.hparams if m.active else (),
                            m if m.active else None))
  return programs


def grouping_groups(kind: str, num_tasks: int) -> list[tuple[int, ...]]:
  """The task groups of config.grouping.groups, by size then in order.

  "all": every non-empty group (2^T - 1); "pairs": every group of one or
  two tasks (T + T(T-1)/2); "": none.
  """
  if not kind:
    return []
  sizes = range(1, (num_tasks if kind == "all" else min(2, num_tasks)) + 1)
  return [g for k in sizes for g in itertools.combinations(range(num_tasks),
                                                           k)]


def grouping_arm(group) -> str:
  """The results arm of a grouping search's network: "g_0_2" for {0, 2}."""
  return "g_" + "_".join(str(t) for t in group)


def grouping_arms(config: Any, num_tasks: int, arms) -> list[tuple]:
  """(arm, width, partition) of each grouping network the arms lack.

  A group that an arm at the config's width already trains as one of its
  networks (MTL's group of all tasks, STL's single tasks, a partition's
  group) is read from that arm instead of being trained twice.
  """
  width = config.model.width
  have = {tuple(sorted(p)) for _, w, partition in arms if w == width
          for p in partition}
  return [(grouping_arm(g) + config.arm_suffix, width, [g])
          for g in grouping_groups(config.grouping.groups, num_tasks)
          if g not in have]


def _check_rep_grad(name: str, method, arch: str) -> None:
  """rep_grad needs an architecture with one shared representation."""
  if method is None or not method.uses_rep_grad:
    return
  from mtljax import registry  # pylint: disable=g-import-not-at-top
  if not hasattr(registry.ARCHITECTURES.get(arch), "encode"):
    raise ConfigError(
        f"config.model.arch={arch!r} has no single shared representation "
        f"(no encode/decode), so {name} (aggregator {method.aggregator!r} "
        "with rep_grad) cannot run; use rep_grad=False (parameter gradients)")


def group_param_counts(program: Program, image_shape, num_tasks
                       ) -> list[int]:
  """Parameter count of each group's network (heads outside it excluded)."""
  return [models.count_params(program.model_cfg, image_shape, num_tasks,
                              np.asarray(g.task_mask)) for g in program.groups]


def group_flops(program: Program, image_shape, tasks) -> list[float]:
  """Forward FLOPs per example of each group's network (models.
  forward_flops), computed once per distinct group."""
  cache: dict = {}
  out = []
  for g in program.groups:
    if g.task_mask not in cache:
      cache[g.task_mask] = models.forward_flops(
          program.model_cfg, image_shape, tasks, np.asarray(g.task_mask))
    out.append(cache[g.task_mask])
  return out
