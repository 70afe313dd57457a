"""The train state of one program's stacked runs, and how it starts.

    graphdef, params, model_state = init_params(model_cfg, image_shape, T,
                                                seeds, num_groups)
    state = init_state(params, model_state, tx)     # a TrainState
    state = state.replace(step=state.step + 1)      # immutable, a pytree

A TrainState is a pytree (flax.struct): it goes through jit, donation,
device_put and orbax checkpoints as it is, and checkpoints name its leaves by
field ("params", "opt_state", ...).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from mtljax import models


@struct.dataclass
class TrainState:
  """Every run's training state; per-run fields have leading [S, G] axes.

  S is the number of seeds and G the number of (task group, learning rate)
  pairs of the program (core/runs.py); leaf [s, g] belongs to run (s, g).

  Attributes:
    step: int32 scalar, the number of completed steps (shared by all runs).
    params: the network parameters, [S, G, ...] per leaf.
    opt_state: the optimizer state, [S, G, ...] per leaf.
    model_state: the network's non-parameter variables (e.g. BatchNorm's
      running statistics), [S, G, ...] per leaf; {} for a network without
      any.
    best_params: the parameters at each run's best validation score,
      [S, G, ...] per leaf.
    best_model_state: model_state at the same step, [S, G, ...] per leaf.
    best_score: float32 [S, G], the best validation selection score; -inf
      until a run has had a finite one.
    best_step: int32 [S, G], the step of best_params (0 until then).
  """
  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any
  best_params: Any
  best_model_state: Any
  best_score: jax.Array
  best_step: jax.Array


def init_params(model_cfg, image_shape, num_tasks: int, seeds,
                num_groups: int):
  """Stacked initial parameters and model state [S, G, ...], and the graphdef.

  Every run of seed s starts from the same weights (key(seed)): the MTL network
  and the T STL networks of one seed share their initialisation, which pairs
  the comparison in initialisation as well as in data.

  Returns:
    (graphdef, params, model_state).
  """
  graphdef = models.graphdef(model_cfg, image_shape, num_tasks)

  def one(seed):
    _, params, model_state = models.create(model_cfg, image_shape, num_tasks,
                                           jax.random.key(seed))
    return params, model_state

  def stacked(seed_array):
    return jax.tree.map(
        lambda x: jnp.broadcast_to(x[:, None],
                                   (x.shape[0], num_groups) + x.shape[1:]),
        jax.vmap(one)(seed_array))

  # One compiled program: op-by-op, each op would be a small compile of its own.
  params, model_state = jax.jit(stacked)(jnp.asarray(seeds, jnp.uint32))
  return graphdef, params, model_state


def init_state(params, model_state, tx, method=None,
               num_tasks: int | None = None) -> TrainState:
  """The state before the first step: optimizer states, no best yet.

  Args:
    params: stacked [S, G, ...] parameters (init_params).
    model_state: stacked [S, G, ...] model state (init_params).
    tx: the optimizer (make_optimizer).
    method: a method_step.MethodSpec; an active one keeps its state beside
      the optimizer's, opt_state = {"tx": ..., "method": ...}.
    num_tasks: T (needed with an active method).
  """
  if method is not None and method.active:
    from mtljax.core import method_step  # pylint: disable=g-import-not-at-top
    opt_state = method_step.init_opt_state(tx, params, method, num_tasks)
  else:
    opt_state = jax.jit(jax.vmap(jax.vmap(tx.init)))(params)
  s, g = jax.tree.leaves(params)[0].shape[:2]
  # Copies: the step donates the state, and a buffer must not be donated
  # twice (once as params, once as best_params).
  copy = lambda tree: jax.tree.map(jnp.copy, tree)
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
      model_state=model_state, best_params=copy(params),
      best_model_state=copy(model_state),
      best_score=jnp.full((s, g), -jnp.inf, jnp.float32),
      best_step=jnp.zeros((s, g), jnp.int32))
