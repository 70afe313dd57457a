"""One interface for mapping a one-run function over the [S, G] runs.

The train step, evaluation and any new step variant are written for ONE run
and mapped over the stacked runs by `map_runs`; only it knows the three ways
of doing so:

    step = map_runs(run_step, "scan", (RUN, RUN, RUN, RUN, SEED, SHARED),
                    carry=(0, 1, 2))
    params, opt_state, model_state, metrics = step(
        params, opt_state, model_state, specs, batch, step_count)

Each argument has a *kind*: "run" leaves have leading [S, G] axes (one slice
per run), "seed" leaves a leading [S] axis (a seed's batch is shared by its G
runs), "shared" leaves none (the step counter, evaluation images). Outputs
get leading [S, G] axes.

Run maps (config.train.run_map; all give the same results up to rounding):
  * "vmap": one batched program. Best on GPU/TPU, and for dense layers
    everywhere.
  * "unroll": R separate copies of the run inside the same jit.
  * "scan": one copy of the run, applied to each run in turn by a loop
    inside the jit. On XLA:CPU a vmapped convolution lowers to a grouped
    convolution ~8-9x slower than R plain ones, and "unroll" compiles R
    copies (18 s for 40 CNN runs), so "auto" picks "scan" for convolutional
    encoders on CPU: as fast as R separate steps, compiled once
    (docs/PERFORMANCE.md).

`carry` names "run" arguments that the function returns updated (their new
values first in its output tuple). Under "scan" they are the loop's carry
and each run's new value is written back in place, so the loop never holds
two copies of the state; under "vmap" and "unroll" they are ordinary
outputs.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from mtljax.config import RUN_MAPS

RUN, SEED, SHARED = "run", "seed", "shared"
KINDS = (RUN, SEED, SHARED)


def map_runs(fn: Callable, run_map: str, kinds: Sequence[str], *,
             carry: Sequence[int] = ()) -> Callable:
  """Maps a one-run function over the [S, G] runs.

  Args:
    fn: the function for one run, taking one argument per entry of `kinds`.
      With `carry`, it returns a tuple: the new values of the carried
      arguments (in `carry`'s order), then its other outputs.
    run_map: "vmap", "unroll" or "scan" (see the module docstring).
    kinds: per argument of `fn`, how it is laid out: RUN ([S, G, ...]),
      SEED ([S, ...]) or SHARED (no runs axis).
    carry: positions of RUN arguments that `fn` returns updated.

  Returns:
    The mapped function, taking the stacked arguments; every output has
    leading [S, G] axes.

  Raises:
    ValueError: an unknown run map or kind, or a carried argument that is
      not of kind RUN.
  """
  kinds, carry = tuple(kinds), tuple(carry)
  if run_map not in RUN_MAPS:
    raise ValueError(f"run_map must be one of {RUN_MAPS}; got {run_map!r}")
  bad = [k for k in kinds if k not in KINDS]
  if bad:
    raise ValueError(f"argument kinds must be in {KINDS}; got {bad[0]!r}")
  if any(not 0 <= i < len(kinds) or kinds[i] != RUN for i in carry):
    raise ValueError(f"carry={carry!r} must name arguments of kind {RUN!r} "
                     f"(kinds {kinds!r})")
  if run_map == "vmap":
    inner = jax.vmap(fn, in_axes=tuple(0 if k == RUN else None for k in kinds))
    return jax.vmap(inner, in_axes=tuple(None if k == SHARED else 0
                                         for k in kinds))
  if run_map == "unroll":
    return _unrolled(fn, kinds)
  return _scanned(fn, kinds, carry)


def _unrolled(fn, kinds):
  def pick(a, k, s, g):
    return a if k == SHARED else _take(a, s) if k == SEED else _take(a, s, g)

  def unrolled(*args):
    s_count, g_count = _run_shape(args, kinds)
    rows = [[fn(*(pick(a, k, s, g) for a, k in zip(args, kinds)))
             for g in range(g_count)] for s in range(s_count)]
    return _stack2(rows)

  return unrolled


def _scanned(fn, kinds, carry):
  n_carry = len(carry)

  def scanned(*args):
    s_count, g_count = _run_shape(args, kinds)
    # Runs flattened to one axis (a free reshape), indexed by run number.
    flat = [_flat_runs(a) if k == RUN else a for a, k in zip(args, kinds)]

    def body(carried, i):
      one = [a if k == SHARED else
             _index(a, i // g_count) if k == SEED else _index(a, i)
             for a, k in zip(flat, kinds)]
      for pos, c in zip(carry, carried):
        one[pos] = _index(c, i)
      out = fn(*one)
      if not n_carry:
        return (), out
      new = tuple(_put(c, x, i) for c, x in zip(carried, out[:n_carry]))
      return new, tuple(out[n_carry:])

    final, ys = jax.lax.scan(body, tuple(flat[pos] for pos in carry),
                             jnp.arange(s_count * g_count))
    ys = _unflat_runs(ys, s_count, g_count)
    if not n_carry:
      return ys
    return tuple(_unflat_runs(c, s_count, g_count) for c in final) + ys

  return scanned


def keep_where(ok, new, old):
  """Per run: `new` where ok[s, g], else `old` (leaves have [S, G] axes).

  The vmapped step's guard against a non-finite update (a cond per run
  would become this select under vmap anyway).
  """
  def sel(a, b):
    return jnp.where(ok.reshape(ok.shape + (1,) * (a.ndim - ok.ndim)), a, b)
  return jax.tree.map(sel, new, old)


def default_run_map(convolutional: bool, backend: str | None = None) -> str:
  """"scan" for convolutional encoders on CPU, "vmap" everywhere else.

  Args:
    convolutional: whether the model's encoder is convolutional
      (models.is_convolutional).
    backend: "cpu", "gpu", "tpu"; None: JAX's default backend.
  """
  backend = backend or jax.default_backend()
  return "scan" if (convolutional and backend == "cpu") else "vmap"


def _take(tree, *idx):
  return jax.tree.map(lambda x: x[idx], tree)


def _stack2(rows):
  """[[tree]*G]*S → one tree with leading [S, G] axes."""
  return jax.tree.map(lambda *xs: jnp.stack(xs),
                      *[jax.tree.map(lambda *ys: jnp.stack(ys), *row)
                        for row in rows])


def _flat_runs(tree):
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def _unflat_runs(tree, s_count, g_count):
  return jax.tree.map(
      lambda x: x.reshape((s_count, g_count) + x.shape[1:]), tree)


def _index(tree, i):
  return jax.tree.map(
      lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False), tree)


def _put(tree, new, i):
  """`tree` with run i replaced by `new` (an in-place update in the loop)."""
  return jax.tree.map(
      lambda x, y: jax.lax.dynamic_update_index_in_dim(x, y, i, 0), tree, new)


def _run_shape(args, kinds) -> tuple[int, int]:
  leaf = next((jax.tree.leaves(a)[0] for a, k in zip(args, kinds)
               if k == RUN and jax.tree.leaves(a)), None)
  if leaf is None:
    raise ValueError("map_runs needs an argument of kind 'run' with arrays, "
                     "to know the number of runs")
  return leaf.shape[0], leaf.shape[1]
