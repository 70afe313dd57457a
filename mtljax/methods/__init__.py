"""MTL methods as pure JAX pieces, usable from any training loop.

    direction = mtljax.methods.aggregate("upgrad", grads)      # grads [T, P]
    direction = mtljax.methods.aggregate("cagrad", grads, c=0.4)
    direction = mtljax.methods.aggregate("pcgrad", grads, key=key)
    direction = mtljax.methods.aggregate("mgda", grads, mask=present)
    gradvac = mtljax.methods.get_aggregator("gradvac")         # stateful
    state = gradvac.init(num_tasks)
    direction, state = gradvac.update(grads, state, key=key)
    mtljax.methods.names()                                      # everything

An aggregator maps the per-task gradients of the shared parameters, one row
per task, to one update direction. Each is deterministic given its inputs
(random ones take a `key`), jit-able and vmappable over runs, and never
gives NaN for zero, duplicate or exactly opposed gradients. Every one takes
a present-task `mask` ([T] bool): the result is the aggregator applied to
the present tasks alone. The solvers work on the T x T Gramian
G = grads grads^T (`gramian.py`), written in JAX.

Scale conventions differ between libraries; each aggregator's docstring
says whether its direction is on the scale of the sum or of the mean of the
task gradients.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mtljax import registry
from mtljax.methods import base

# (name, function, static hyperparameters) -> the jitted aggregator: an eager
# call compiles once per shape instead of running its solver op by op (or
# recompiling its loops) at every call.
_JITTED: dict = {}


def aggregate(name: str, grads, **hparams):
  """Combines per-task gradients into one direction.

  Args:
    name: a registered stateless aggregator (`aggregator_names()`).
    grads: [T, P] per-task gradients (one row per task).
    **hparams: the aggregator's hyperparameters (e.g. `c` for CAGrad, `key`
      for PCGrad's random order, `mask` for the present tasks, `losses` for
      MGDA's loss normalisation).

  Returns:
    [P] the direction (apply it like a gradient: descend along it).

  Raises:
    ConfigError: an unknown name (listing the registered ones).
    ValueError: grads that are not a [T, P] array with T >= 1, or a stateful
      aggregator (use `get_aggregator(name).init/update`).
  """
  fn = registry.AGGREGATORS.get(name)
  if isinstance(fn, base.Aggregator):
    raise ValueError(
        f"aggregator {name!r} is stateful; use "
        f"mtljax.methods.get_aggregator({name!r}).init/update instead of "
        f"aggregate()")
  grads = jnp.asarray(grads)
  if grads.ndim != 2 or grads.shape[0] < 1:
    raise ValueError(f"grads must be a [T, P] array with T >= 1; got shape "
                     f"{grads.shape}")
  if hparams.get("mask") is not None:
    # Always an array: the mask is traced, one compilation serves them all.
    hparams["mask"] = jnp.asarray(hparams["mask"], bool)
  if _is_jitted(fn):
    # The built-ins are jitted with their options static already: calling
    # them directly shares their compilations with direct calls.
    return fn(grads, **hparams)
  # Python ints, bools, strings and None (iteration counts, options) shape
  # the program; floats and arrays (c, a key, pref, mask) are traced, so a
  # grid of them reuses one compilation (and works under an outer vmap).
  static = {k: v for k, v in hparams.items()
            if v is None or isinstance(v, (bool, int, str))}
  dynamic = {k: v for k, v in hparams.items() if k not in static}
  cache_key = (name, fn, tuple(sorted(static.items())))
  jitted = _JITTED.get(cache_key)
  if jitted is None:
    jitted = _JITTED[cache_key] = jax.jit(functools.partial(fn, **static))
  return jitted(grads, **dynamic)


def _is_jitted(fn) -> bool:
  """Whether fn is jitted: a `gramian.jit` wrapper (it has `jitted`) or a
  `jax.jit` function (it has `lower` and `trace`)."""
  return getattr(fn, "jitted", None) is not None or (
      callable(getattr(fn, "lower", None)) and
      callable(getattr(fn, "trace", None)))


def get_aggregator(name: str) -> base.Aggregator:
  """The registered aggregator as an init/update pair.

  A stateless function is wrapped by `base.stateless` (empty state); a
  registered `base.Aggregator` (GradVac, GradNorm) is returned as it is.
  """
  obj = registry.AGGREGATORS.get(name)
  return obj if isinstance(obj, base.Aggregator) else base.stateless(obj)


def get_weighting(name: str) -> base.Weighting:
  """The registered loss weighting (an init/update pair)."""
  return registry.WEIGHTINGS.get(name)


def aggregator_names() -> tuple[str, ...]:
  """Every registered gradient aggregator (stateless and stateful)."""
  return registry.AGGREGATORS.names()


def weighting_names() -> tuple[str, ...]:
  """Every registered loss weighting."""
  return registry.WEIGHTINGS.names()


def names() -> tuple[str, ...]:
  """Every registered method: the aggregators, then the weightings."""
  return aggregator_names() + tuple(n for n in weighting_names()
                                    if n not in aggregator_names())


__all__ = ["aggregate", "get_aggregator", "get_weighting", "names",
           "aggregator_names", "weighting_names"]
