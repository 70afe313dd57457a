"""Loss weightings as optax-style init/update pairs (see `base.Weighting`).

Each returns per-task weights w [T] (0 for absent tasks); the step takes one
backward pass of sum_t stop_gradient(w_t) * loss_t, where loss_t is task t's
term under `loss.normalize` times `loss.task_weights`.
"""

from __future__ import annotations

import jax.numpy as jnp

from mtljax import registry
from mtljax.methods import base


def _static_update(losses, state, *, mask, step=None, key=None, lr=None):
  """Weights 1 on present tasks: the loss is sum_t loss_t (today's loss)."""
  del step, key, lr
  return jnp.where(mask, 1.0, 0.0).astype(losses.dtype), state


# "static": loss.normalize's terms times loss.task_weights, unchanged (the
# default; its step is the classic single backward pass).
static = base.Weighting(lambda t: (), _static_update)
registry.WEIGHTINGS.register("static", static)
