"""The pieces of a method's step: its spec, state, per-task terms and Jacobian.

Split from method_step.py (which builds the step from them): what a program
needs to know about its method (`MethodSpec`, built from a config by
`method_spec`), the method's initial state, the decomposition of a loss
normalisation into per-task terms, and the per-task Jacobian of the shared
parameters as [T, P] rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mtljax import registry
from mtljax.config import checks as config_checks
from mtljax.methods import base

# Folded into a run's step key for the method's own randomness (PCGrad's
# order, RLW's weights), apart from dropout's.
_METHOD_STREAM = 0x6D7468


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """What a program's step needs to know about its method (all static).

  Attributes:
    weighting: name in registry.WEIGHTINGS ("static": none).
    aggregator: name in registry.AGGREGATORS, or "none".
    rep_grad: aggregate the representation's gradients.
    weighting_static / aggregator_static: the hyperparameters that shape
      the program (ints, bools, strings), as sorted (name, value) pairs.
    arch: the architecture (its `task_axis` splits shared parameters from
      per-task ones; `encode`/`decode` serve rep_grad).
  """
  weighting: str = "static"
  aggregator: str = "none"
  rep_grad: bool = False
  weighting_static: tuple = ()
  aggregator_static: tuple = ()
  arch: str = "hps"

  # The per-run float hyperparameters, (kind, name, value) triples
  # (Program.specs broadcasts them to [S, G]).
  hparams: tuple = ()

  @property
  def active(self) -> bool:
    return self.weighting != "static" or self.aggregator != "none"

  @property
  def tag(self) -> str:
    """A program-name suffix: "pcgrad", "uw", "mgda_rep", ..."""
    parts = [n for n in (self.weighting, self.aggregator)
             if n not in ("static", "none")]
    return "_".join(parts + (["rep"] if self.rep_grad else []))

  @property
  def uses_rep_grad(self) -> bool:
    return self.rep_grad or bool(getattr(
        registry.AGGREGATORS.get(self.aggregator), "representation", False)
        if self.aggregator != "none" else False)


def _is_static(v) -> bool:
  return isinstance(v, (bool, int, str)) and not isinstance(v, float)


def split_hparams(hparams: dict) -> tuple[tuple, dict]:
  """(static pairs, per-run floats) of a method's hyperparameters."""
  static = tuple(sorted((k, v) for k, v in hparams.items() if _is_static(v)))
  floats = {k: float(v) for k, v in hparams.items() if not _is_static(v)}
  return static, floats


def method_spec(config, overrides: dict | None = None) -> MethodSpec:
  """The MethodSpec of a validated config's method (with a method arm's
  overrides, config.method_arms)."""
  m = config_checks.method_config(config, overrides)
  ws, wf = split_hparams(dict(m.weighting_hparams))
  as_, af = split_hparams(dict(m.aggregator_hparams))
  floats = tuple([("weighting", k, v) for k, v in sorted(wf.items())]
                 + [("aggregator", k, v) for k, v in sorted(af.items())])
  return MethodSpec(m.weighting, m.aggregator, bool(m.rep_grad), ws, as_,
                    config.model.get("arch", "hps"), floats)


def _weighting(spec: MethodSpec):
  return registry.WEIGHTINGS.get(spec.weighting)


def _aggregator(spec: MethodSpec) -> base.Aggregator:
  obj = registry.AGGREGATORS.get(spec.aggregator)
  return obj if isinstance(obj, base.Aggregator) else base.stateless(obj)


def init_method_state(spec: MethodSpec, num_tasks: int, runs: tuple[int, int]):
  """The method's initial state, stacked [S, G, ...] (like opt_state)."""
  if spec.aggregator != "none":
    one = _aggregator(spec).init(num_tasks)
  else:
    one = _weighting(spec).init(num_tasks)
  return jax.tree.map(
      lambda x: jnp.broadcast_to(jnp.asarray(x), runs + jnp.shape(x)).copy(),
      one)


def task_terms(elem, mask, normalize: str):
  """[T] terms loss_t of the weighting `normalize`, summing to its loss.

  Every loss weighting in registry.LOSS_WEIGHTINGS is linear in the
  per-label losses (a sum over labels divided by counts that depend on the
  mask only), so task t's term is the weighting of its column alone.
  """
  fn = registry.LOSS_WEIGHTINGS.get(normalize)
  eye = jnp.eye(elem.shape[1], dtype=elem.dtype)
  return jax.vmap(lambda e: fn(elem * e[None, :], mask))(eye)


def _shared_mask(arch: str, params) -> Any:
  """A pytree of bools: True for shared leaves (no task axis)."""
  cls = registry.ARCHITECTURES.get(arch)
  paths, treedef = jax.tree_util.tree_flatten_with_path(params)
  flags = [cls.task_axis(tuple(getattr(k, "key", str(k)) for k in path))
           is None for path, _ in paths]
  return jax.tree_util.tree_unflatten(treedef, flags)


def _ravel_rows(tree, flags):
  """Concatenates the shared leaves of a [T, ...] pytree into [T, P]."""
  leaves = [x for x, f in zip(jax.tree.leaves(tree), jax.tree.leaves(flags))
            if f]
  t = leaves[0].shape[0]
  return jnp.concatenate([x.reshape(t, -1).astype(jnp.float32)
                          for x in leaves], axis=1)


def _unravel(vec, like, flags):
  """Scatters a [P] vector back into the shared leaves of `like`."""
  out, i = [], 0
  for x, f in zip(jax.tree.leaves(like), jax.tree.leaves(flags)):
    if f:
      n = int(np.prod(x.shape[1:]))
      out.append(vec[i:i + n].reshape(x.shape[1:]).astype(x.dtype))
      i += n
    else:
      out.append(None)
  return out


def _jacobian(vjp: Callable, eye):
  """The VJP at each one-hot cotangent, stacked: [T, ...] per leaf.

  A Python loop of T VJPs (one forward pass, T backward passes), not
  `jax.vmap(vjp)(eye)` (jacrev): under jit of the runs' nested vmap, the
  vmapped VJP returned wrong values, sometimes NaN, on XLA:CPU (jax 0.10.2)
  whenever the loss carried a factor computed from the mask (per_task's
  1/T', the drop policy's rescale), while the same function unjitted, or
  without the runs' vmap, was right. The loop is exact everywhere
  (tests/test_step_methods.py compares the vmapped runs with the unrolled
  ones and with jax.jacrev of one run).
  """
  rows = [vjp(eye[t]) for t in range(eye.shape[0])]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *rows)
