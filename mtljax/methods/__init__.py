"""MTL methods as pure JAX pieces, usable from any training loop.

    direction = mtljax.methods.aggregate("upgrad", grads)      # grads [T, P]
    direction = mtljax.methods.aggregate("cagrad", grads, c=0.4)
    direction = mtljax.methods.aggregate("pcgrad", grads, key=key)
    mtljax.methods.names()                                      # everything

An aggregator maps the per-task gradients of the shared parameters, one row
per task, to one update direction. Each is deterministic given its inputs
(random ones take a `key`), jit-able and vmappable over runs, and never
gives NaN for zero, duplicate or exactly opposed gradients. The solvers
work on the T x T Gramian G = grads grads^T (`gramian.py`), written in JAX.

Scale conventions differ between libraries; each aggregator's docstring
says whether its direction is on the scale of the sum or of the mean of the
task gradients.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mtljax import registry

# (name, function, static hyperparameters) -> the jitted aggregator: an eager
# call compiles once per shape instead of running its solver op by op (or
# recompiling its loops) at every call.
_JITTED: dict = {}


def aggregate(name: str, grads, **hparams):
  """Combines per-task gradients into one direction.

  Args:
    name: a registered aggregator (`names()`).
    grads: [T, P] per-task gradients (one row per task).
    **hparams: the aggregator's hyperparameters (e.g. `c` for CAGrad, `key`
      for PCGrad's random order).

  Returns:
    [P] the direction (apply it like a gradient: descend along it).

  Raises:
    ConfigError: an unknown name (listing the registered ones).
    ValueError: grads that are not a [T, P] array with T >= 1.
  """
  fn = registry.AGGREGATORS.get(name)
  grads = jnp.asarray(grads)
  if grads.ndim != 2 or grads.shape[0] < 1:
    raise ValueError(f"grads must be a [T, P] array with T >= 1; got shape "
                     f"{grads.shape}")
  # Python ints, bools, strings and None (iteration counts, options) shape
  # the program; floats and arrays (c, a key, pref) are traced, so a grid of
  # them reuses one compilation (and works under an outer vmap).
  static = {k: v for k, v in hparams.items()
            if v is None or isinstance(v, (bool, int, str))}
  dynamic = {k: v for k, v in hparams.items() if k not in static}
  cache_key = (name, fn, tuple(sorted(static.items())))
  jitted = _JITTED.get(cache_key)
  if jitted is None:
    jitted = _JITTED[cache_key] = jax.jit(functools.partial(fn, **static))
  return jitted(grads, **dynamic)


def names() -> tuple[str, ...]:
  """Every registered aggregator."""
  return registry.AGGREGATORS.names()


__all__ = ["aggregate", "names"]
