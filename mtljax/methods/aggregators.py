"""The gradient aggregators, one function + one registry line each.

Each is `fn(grads [T, P], **hparams) -> [P]` (see `mtljax.methods`).
"""

from __future__ import annotations

import jax.numpy as jnp

from mtljax import registry


def mean(grads):
  """The mean of the task gradients (equal weighting; mean scale)."""
  return jnp.mean(grads, axis=0)


def sum_(grads):
  """The sum of the task gradients (sum scale)."""
  return jnp.sum(grads, axis=0)


registry.AGGREGATORS.register("mean", mean)
registry.AGGREGATORS.register("sum", sum_)
