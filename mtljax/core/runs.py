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
from typing import Any, Sequence

import numpy as np

from mtljax import models
from mtljax.config import ConfigError

# Order defines the integer code a run's spec carries (see step.py).
MISSING_POLICIES = ("mask", "negative", "drop")


@dataclasses.dataclass(frozen=True)
class Group:
  """One network's role: the arm it belongs to and the tasks it learns.

  Attributes:
    arm: results label, e.g. "mtl", "stl", "stl_matched" (+ config suffix).
    mode: "mtl" or "stl".
    task_mask: [T] tuple of 0/1.
    learning_rate: this run's (peak) learning rate.
    missing_policy: how the run treats "?" labels (step.MISSING_POLICIES).
  """
  arm: str
  mode: str
  task_mask: tuple
  learning_rate: float
  missing_policy: str = "mask"

  @property
  def tasks(self) -> list[int]:
    return [t for t, m in enumerate(self.task_mask) if m]


@dataclasses.dataclass(frozen=True)
class Program:
  """Runs that share one network shape, trained by one compiled step."""
  name: str
  model_cfg: Any
  groups: tuple[Group, ...]

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
    return {"seed": np.array(seed),
            "task_mask": np.broadcast_to(mask, (s,) + mask.shape).copy(),
            "learning_rate": np.broadcast_to(lr, (s, g)).copy(),
            "missing_policy": np.broadcast_to(policy, (s, g)).copy()}


def _groups(arm: str, mode: str, num_tasks: int, lrs, policies,
            stl_tasks=()) -> list[Group]:
  if mode == "mtl":
    masks = [(1,) * num_tasks]
  else:
    masks = [tuple(int(t == k) for t in range(num_tasks))
             for k in (stl_tasks or range(num_tasks))]
  out = []
  for policy in policies:
    name = arm if policy == "mask" else f"{arm}_{policy}"
    out += [Group(name, mode, m, float(lr), policy) for m in masks for lr in lrs]
  return out


def build_programs(config: Any, image_shape, num_tasks: int) -> list[Program]:
  """The programs (one per distinct width) that a config trains.

  Args:
    config: a validated config.
    image_shape: (H, W, C).
    num_tasks: T.

  Returns:
    Programs in a fixed order; "mtl" and "stl" share the config's width (one
    program), "stl_matched" gets the width whose T networks together have
    about as many parameters as one MTL network.
  """
  lrs = config.optimizer.learning_rates
  stl_tasks = tuple(config.get("stl_tasks", ()))
  bad = [k for k in stl_tasks if k >= num_tasks]
  if bad:
    raise ConfigError(f"config.stl_tasks={stl_tasks!r}: task index {bad[0]} "
                      f"is out of range for a dataset with {num_tasks} tasks")
  by_width: dict[int, list[Group]] = {}
  for mode in config.modes:
    arm = mode + config.arm_suffix
    policies = config.loss.missing_policies
    if mode == "stl_matched":
      width = models.matched_stl_width(config.model, image_shape, num_tasks)
      groups = _groups(arm, "stl", num_tasks, lrs, policies, stl_tasks)
    else:
      width = config.model.width
      groups = _groups(arm, mode, num_tasks, lrs, policies, stl_tasks)
    by_width.setdefault(width, []).extend(groups)
  programs = []
  for width, groups in by_width.items():
    model_cfg = config.model.copy_and_resolve_references()
    model_cfg.width = width
    programs.append(Program(f"w{width}", model_cfg, tuple(groups)))
  return programs


def group_param_counts(program: Program, image_shape, num_tasks: int
                       ) -> list[int]:
  """Parameter count of each group's network (heads outside it excluded)."""
  return [models.count_params(program.model_cfg, image_shape, num_tasks,
                              np.asarray(g.task_mask)) for g in program.groups]
