"""Optimizers and learning-rate schedules, one registry line each.

    tx = make_optimizer(config.optimizer, total_steps)

Every optimizer is built with a unit peak learning rate: each run's own rate
multiplies its updates inside the step (core/step.py), so one compiled
program trains a whole learning-rate grid (the equal tuning budget is one
program, not one per rate). For adam, adamw (decoupled decay) and sgd that
scaling is exactly equivalent to passing the rate to optax.

A schedule is `fn(opt_cfg, total_steps) -> optax schedule` peaking at 1; an
optimizer is `fn(opt_cfg, schedule) -> optax.GradientTransformation`.
"""

from __future__ import annotations

from typing import Any

import optax

from mtljax import registry


def constant(opt_cfg, total_steps):
  del opt_cfg, total_steps
  return optax.constant_schedule(1.0)


def cosine(opt_cfg, total_steps):
  del opt_cfg
  return optax.cosine_decay_schedule(1.0, max(total_steps, 1))


def warmup_cosine(opt_cfg, total_steps):
  return optax.warmup_cosine_decay_schedule(
      0.0, 1.0, opt_cfg.warmup_steps,
      max(total_steps, opt_cfg.warmup_steps + 1))


def adam(opt_cfg, schedule):
  del opt_cfg
  return optax.adam(schedule)


def adamw(opt_cfg, schedule):
  return optax.adamw(schedule, weight_decay=opt_cfg.weight_decay)


def sgd(opt_cfg, schedule):
  return optax.sgd(schedule, momentum=opt_cfg.momentum or None)


registry.SCHEDULES.register("constant", constant)
registry.SCHEDULES.register("cosine", cosine)
registry.SCHEDULES.register("warmup_cosine", warmup_cosine)
registry.OPTIMIZERS.register("adam", adam)
registry.OPTIMIZERS.register("adamw", adamw)
registry.OPTIMIZERS.register("sgd", sgd)


def make_optimizer(opt_cfg: Any, total_steps: int
                   ) -> optax.GradientTransformation:
  """The config's optimizer, with a unit peak learning rate (see above)."""
  schedule = registry.SCHEDULES.get(opt_cfg.schedule)(opt_cfg, total_steps)
  parts = []
  if opt_cfg.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt_cfg.grad_clip_norm))
  parts.append(registry.OPTIMIZERS.get(opt_cfg.name)(opt_cfg, schedule))
  return optax.chain(*parts)
