"""The two optax-style interfaces that every MTL method implements.

A method combines the tasks at one of two points of the step:

  * a **loss weighting** turns the per-task losses into weights, and the
    step takes ONE backward pass of sum_t stop_gradient(w_t) * loss_t::

        state = weighting.init(num_tasks)
        weights, state = weighting.update(losses, state, mask=mask, step=k,
                                          key=key, lr=lr, **hparams)

  * a **gradient aggregator** turns the per-task gradients of the shared
    parameters (or of the shared representation, with rep_grad) into one
    direction::

        state = aggregator.init(num_tasks)
        direction, state = aggregator.update(grads, state, losses=losses,
                                             mask=mask, step=k, key=key,
                                             lr=lr, **hparams)

Both are pure functions of pytrees, so the step maps them over runs like the
optimizer (their states get the [S, G] runs axis), and floating-point
hyperparameters (CAGrad's c, DWA's temperature, ...) are traced per-run
values. `mask` is the [T] bool of the tasks present in this step (observed
labels in the batch, inside the run's group): an absent task's loss and
gradient are ignored whatever they hold, and it must not enter any
normalisation (MGDA on 3 present tasks of 4 is MGDA on those 3).

The stateless aggregators of `mtljax.methods.aggregate` are wrapped by
`stateless`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp

from mtljax import registry


class Weighting(NamedTuple):
  """A loss weighting: `init(num_tasks) -> state`, `update(losses [T],
  state, *, mask [T], step, key, lr, **hparams) -> (weights [T], state)`.

  The weights of absent tasks must be 0. `needs_next_losses`: the method
  (FAMO) also reads the losses after the parameter update, on the same
  batch; the step then calls `after(next_losses, state, *, mask, lr,
  **hparams) -> state` (one extra forward pass).
  """
  init: Callable[[int], Any]
  update: Callable[..., tuple[Any, Any]]
  after: Callable[..., Any] | None = None

  @property
  def needs_next_losses(self) -> bool:
    return self.after is not None


class Aggregator(NamedTuple):
  """A gradient aggregator: `init(num_tasks) -> state`, `update(grads
  [T, P], state, *, losses [T], mask [T], step, key, lr, **hparams) ->
  (direction [P], state)`.

  `scale`: "mean" or "sum" (the scale of the direction for equal, aligned
  task gradients), or "own" (the method fixes its own scale).
  """
  init: Callable[[int], Any]
  update: Callable[..., tuple[Any, Any]]
  scale: str = "mean"


def _no_state(num_tasks: int):
  del num_tasks
  return ()


def stateless(fn: Callable, *, scale: str = "mean") -> Aggregator:
  """An Aggregator from `fn(grads, *, mask=None, key=None?, **hparams)`.

  `fn` receives `key` only if it takes one (PCGrad, GradDrop), the
  present-task `mask` if it takes one, and `losses` if it takes them
  (MGDA's loss-based gradient normalisation).
  """
  params = inspect.signature(fn).parameters
  takes_key = "key" in params
  takes_mask = "mask" in params
  takes_losses = "losses" in params

  def update(grads, state, *, losses=None, mask=None, step=None, key=None,
             lr=None, **hparams):
    del step, lr
    kw = dict(hparams)
    if takes_key:
      kw["key"] = key
    if takes_losses:
      kw["losses"] = losses
    if takes_mask:
      kw["mask"] = mask
    elif mask is not None:
      # Without mask support an absent task's row must at least be zero.
      grads = jnp.where(jnp.asarray(mask)[:, None], grads, 0)
    return fn(grads, **kw), state

  update.__wrapped__ = fn  # method_hparams reads the method's own signature
  return Aggregator(_no_state, update, scale)


# The hyperparameters of a method (its update's keyword arguments).
method_hparams = registry.method_hparams

__all__ = ["Weighting", "Aggregator", "stateless", "method_hparams"]
