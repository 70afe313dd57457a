"""The train step with an MTL method: a loss weighting or a gradient aggregator.

`step.make_train_step(..., method=spec)` builds this step when the config
names a method (`config.method`); without one it builds the classic step of
step.py, unchanged. Written for ONE run and mapped over runs like the classic
step (run_map.map_runs), so a method's state and its float hyperparameters
are per-run values on the [S, G] axes.

Both kinds of method see the per-task terms loss_t of `loss.normalize` (times
`loss.task_weights`): the decomposition sum_t loss_t = the classic loss, so
the "static" weighting with no aggregator is the classic step. Only *present*
tasks take part: a task with no observed label in the batch, or outside the
run's group, has loss_t = 0 and zero gradient, and the methods get a [T]
`present` mask so that it enters no normalisation.

  * A weighting (UW, DWA, ...) turns the terms into weights w_t; the step
    takes one backward pass of sum_t stop_gradient(w_t) loss_t.
  * An aggregator (PCGrad, MGDA, ...) gets the per-task gradients of the
    SHARED parameters, one backward pass per task from one forward pass
    (a vmap of the VJP over the T one-hot cotangents, i.e. jacrev), and
    combines them into one direction; each task's own parameters (its head,
    its experts or columns) get the gradient of its own term. With
    `rep_grad`, the per-task gradients are taken w.r.t. the shared
    representation (the encoder's output, [B, F] per run) instead: T cheap
    backward passes through the heads, the aggregator on [T, B*F], and ONE
    backward pass of the combined representation gradient through the
    encoder. The two are different methods, not two implementations of one
    (docs/METHODS.md): an aggregator's guarantee (e.g. no conflict with any
    task) then holds for the representation's gradient, not the
    parameters'.

STL runs never see a method: single-task groups train in a program of their
own with the classic step (core/runs.build_programs), bit for bit. Inside a
method's program, a step with at most one present task takes the classic
computation under "scan"/"unroll" (a cond) and, under "vmap", the
aggregator of one task, which is that task's gradient (to rounding).

The pieces (MethodSpec, the per-task terms, the Jacobian as [T, P] rows) are
in method_parts.py; this module builds the step from them.

The method's state lives in the optimizer state, {"tx": ..., "method": ...},
so that the non-finite guard, checkpoints and resume treat it like Adam's
moments.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mtljax import registry
from mtljax.core import run_map as run_map_lib
from mtljax.core.method_parts import (  # noqa: F401 (re-exported)
    _METHOD_STREAM, MethodSpec, _aggregator, _jacobian, _ravel_rows,
    _shared_mask, _unravel, _weighting, init_method_state, method_spec,
    split_hparams, task_terms)
from mtljax.core.run_map import RUN, SEED, SHARED, map_runs
from mtljax.tasks import losses

def make_run_grads(graphdef, *, normalize: str, tasks, method: MethodSpec,
                   plain_grads: Callable) -> tuple[Callable, Callable | None]:
  """ONE run's gradients with the method, and its after-step update.

  Returns `(run_grads, run_after)`: `run_grads(params, opt_state,
  model_state, spec, batch, step) -> (grads, new_model_state,
  new_method_state, metrics)` (opt_state is {"tx", "method"}); `run_after
  (new_params, method_state, model_state, spec, batch, step) ->
  method_state` for a weighting that reads the losses after the update
  (FAMO), else None. `plain_grads` is the classic step's run_grads, taken
  when at most one task is present.
  """
  from mtljax import models  # pylint: disable=g-import-not-at-top
  from mtljax.core import step as step_lib  # pylint: disable=g-import-not-at-top
  tasks = None if tasks is None else tuple(tasks)
  is_binary = None if tasks is None else np.array(
      [t.type == "binary" for t in tasks])
  use_agg = method.aggregator != "none"
  rep = method.uses_rep_grad
  weighting = _weighting(method)
  aggregator = _aggregator(method) if use_agg else None
  w_static = dict(method.weighting_static)
  a_static = dict(method.aggregator_static)
  arch_cls = registry.ARCHITECTURES.get(method.arch)
  if rep and not hasattr(arch_cls, "encode"):
    raise ValueError(f"architecture {method.arch!r} has no shared "
                     "representation (no encode/decode): rep_grad needs one")

  def prepare(spec, batch):
    labels, mask, weight = step_lib.apply_missing_policy(
        batch["labels"], batch["mask"], spec["missing_policy"], is_binary)
    mask = mask & (spec["task_mask"] > 0)
    return labels, mask, weight

  def terms_of(outputs, labels, mask, weight, spec):
    if tasks is None:
      elem = losses._masked_elementwise(outputs, labels, mask)  # pylint: disable=protected-access
    else:
      elem = losses.task_elementwise(outputs, labels, mask, tasks)
    if "task_weights" in spec:
      elem = elem * spec["task_weights"][None, :]
    terms = task_terms(elem, mask, normalize) * rescale(weight)
    count = mask.sum(axis=0).astype(elem.dtype)
    per_task = elem.sum(axis=0) / jnp.maximum(count, 1.0)
    return terms, per_task

  def rescale(weight):
    """As in step.run_loss: per_example divides by the examples kept."""
    if normalize != "per_example":
      return 1.0
    return weight.shape[0] / jnp.maximum(weight.sum(), 1.0)

  def raw_terms_of(outputs, labels, mask, weight, spec):
    # For the per-task Jacobians: the terms without the (parameter-free)
    # rescale, which multiplies the Jacobian's rows afterwards (fewer ops
    # inside the T backward passes; see also _jacobian).
    terms, per_task = terms_of(outputs, labels, mask, jnp.ones_like(weight),
                               spec)
    return terms, per_task

  def forward(p, model_state, x, rng):
    return models.apply(graphdef, p, model_state, x, rng=rng,
                        deterministic=False)

  def method_grads(params, opt_state, model_state, spec, batch, step):
    rng = jax.random.fold_in(jax.random.key(spec["seed"]), step)
    mkey = jax.random.fold_in(rng, _METHOD_STREAM)
    labels, mask, weight = prepare(spec, batch)
    present = mask.any(axis=0)
    mstate = opt_state["method"]
    lr = spec["learning_rate"]
    hp = spec.get("method", {})
    common = dict(mask=present, step=step, key=mkey, lr=lr)

    if not use_agg:
      def loss_fn(p):
        out, new_ms = forward(p, model_state, batch["image"], rng)
        terms, per_task = terms_of(out, labels, mask, weight, spec)
        w, new_mstate = weighting.update(
            jax.lax.stop_gradient(terms), mstate, **common, **w_static,
            **hp.get("weighting", {}))
        w = jax.lax.stop_gradient(w)
        return jnp.sum(w * terms), (per_task, new_ms, new_mstate, terms)
      (loss, (per_task, new_ms, new_mstate, terms)), grads = (
          jax.value_and_grad(loss_fn, has_aux=True)(params))
      return grads, new_ms, new_mstate, loss, per_task

    flags = _shared_mask(method.arch, params)
    num_tasks = mask.shape[1]
    eye = jnp.eye(num_tasks, dtype=jnp.float32)
    agg_kw = dict(common, **a_static, **hp.get("aggregator", {}))
    if not rep:
      def terms_fn(p):
        out, new_ms = forward(p, model_state, batch["image"], rng)
        terms, per_task = raw_terms_of(out, labels, mask, weight, spec)
        return terms, (per_task, new_ms)
      terms, vjp, (per_task, new_ms) = jax.vjp(terms_fn, params, has_aux=True)
      (jac,) = _jacobian(vjp, eye)                    # leaves [T, ...]
      factor = rescale(weight)
      terms = terms * factor
      jac = jax.tree.map(lambda j: j * factor, jac)
      rows = _ravel_rows(jac, flags)                  # [T, P_shared]
      direction, new_mstate = aggregator.update(
          rows, mstate, losses=jax.lax.stop_gradient(terms), **agg_kw)
      shared = _unravel(direction, jac, flags)
      leaves = [s if f else j.sum(axis=0) for s, j, f in zip(
          shared, jax.tree.leaves(jac), jax.tree.leaves(flags))]
      grads = jax.tree_util.tree_unflatten(jax.tree.structure(params), leaves)
    else:
      def encode(p):
        net = nnx.merge(graphdef, p, model_state)
        r = net.encode(batch["image"], rng=rng, deterministic=False)
        return r, nnx.to_pure_dict(nnx.split(net, nnx.Param, ...)[2])
      r, enc_vjp, mid_ms = jax.vjp(encode, params, has_aux=True)
      # The heads' parameters only: the T backward passes must not build
      # [T, ...] zeros for the encoder.
      leaves, treedef = jax.tree.flatten(params)
      fl = jax.tree.leaves(flags)
      own = [x for x, f in zip(leaves, fl) if not f]

      def with_own(own_leaves):
        it = iter(own_leaves)
        return jax.tree.unflatten(
            treedef, [x if f else next(it) for x, f in zip(leaves, fl)])

      def decode_terms(own_leaves, r):
        net = nnx.merge(graphdef, with_own(own_leaves), mid_ms)
        out = net.decode(r, rng=rng, deterministic=False).astype(jnp.float32)
        terms, per_task = raw_terms_of(out, labels, mask, weight, spec)
        return terms, (per_task,
                       nnx.to_pure_dict(nnx.split(net, nnx.Param, ...)[2]))
      terms, dec_vjp, (per_task, new_ms) = jax.vjp(decode_terms, own, r,
                                                   has_aux=True)
      jac_own, jac_r = _jacobian(dec_vjp, eye)        # [T, ...], [T, *r]
      factor = rescale(weight)
      terms = terms * factor
      jac_own = [j * factor for j in jac_own]
      jac_r = jac_r * factor
      rows = jac_r.reshape(num_tasks, -1).astype(jnp.float32)
      direction, new_mstate = aggregator.update(
          rows, mstate, losses=jax.lax.stop_gradient(terms), **agg_kw)
      (g_enc,) = enc_vjp(direction.reshape(r.shape).astype(r.dtype))
      it = iter(jac_own)
      grads = jax.tree.unflatten(treedef, [
          e if f else e + next(it).sum(axis=0)
          for e, f in zip(jax.tree.leaves(g_enc), fl)])
    return grads, new_ms, new_mstate, jnp.sum(terms), per_task

  def plain(params, opt_state, model_state, spec, batch, step):
    grads, new_ms, metrics = plain_grads(params, model_state, spec, batch,
                                         step)
    return (grads, new_ms, opt_state["method"], metrics["loss"],
            metrics["task_loss"])

  def run_grads(params, opt_state, model_state, spec, batch, step,
                guard_single: bool = True):
    """-> (grads, new_model_state, new_method_state, metrics).

    guard_single: take the classic computation when at most one task is
    present (a cond). Under vmap a cond computes both branches, so the
    vmapped step leaves it out: every aggregator returns the one present
    task's gradient anyway (to rounding; tests/test_methods_masked.py).
    """
    if not guard_single:
      grads, new_ms, new_mstate, loss, per_task = method_grads(
          params, opt_state, model_state, spec, batch, step)
    else:
      _, mask, _ = prepare(spec, batch)
      single = mask.any(axis=0).sum() <= 1
      grads, new_ms, new_mstate, loss, per_task = jax.lax.cond(
          single, plain, method_grads, params, opt_state, model_state, spec,
          batch, step)
    sq = sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
             for g in jax.tree.leaves(grads))
    ok = jnp.isfinite(loss) & jnp.isfinite(sq)
    metrics = {"loss": loss, "task_loss": per_task, "grad_norm": jnp.sqrt(sq),
               "nonfinite": (~ok).astype(jnp.int32)}
    return grads, new_ms, new_mstate, metrics

  def run_after(params, mstate, model_state, spec, batch, step):
    """FAMO's update from the terms after the step (same batch)."""
    labels, mask, weight = prepare(spec, batch)
    present = mask.any(axis=0)
    rng = jax.random.fold_in(jax.random.key(spec["seed"]), step)
    out, _ = forward(params, model_state, batch["image"], rng)
    nxt, _ = terms_of(out, labels, mask, weight, spec)
    return jax.lax.cond(
        present.sum() <= 1, lambda s: s,
        lambda s: weighting.after(
            jax.lax.stop_gradient(nxt), s, mask=present,
            lr=spec["learning_rate"], **w_static,
            **spec.get("method", {}).get("weighting", {})),
        mstate)

  return run_grads, (run_after if weighting.needs_next_losses and not use_agg
                     else None)


def make_train_step(graphdef, tx, *, normalize: str, mesh, donate: bool,
                    run_map: str, tasks, method: MethodSpec) -> Callable:
  """The compiled, data-parallel step over all runs, with a method.

  Same interface as step.make_train_step and the same structure (one
  batched gradient program and a guarded update under "vmap", one guarded
  run at a time under "scan"); the state's opt_state is {"tx": ...,
  "method": ...} (init_opt_state).
  """
  from mtljax.core import step as step_lib  # pylint: disable=g-import-not-at-top
  plain = step_lib.make_run_grads(graphdef, normalize=normalize, tasks=tasks)
  run_grads, run_after = make_run_grads(
      graphdef, normalize=normalize, tasks=tasks, method=method,
      plain_grads=plain)
  run_update = step_lib.make_run_update(tx)
  kinds = (RUN, RUN, RUN, RUN, SEED, SHARED)

  def run_step(params, opt_state, model_state, spec, batch, step):
    grads, new_ms, new_mstate, metrics = run_grads(
        params, opt_state, model_state, spec, batch, step)

    def apply(p, o, g, new_ms, new_mstate):
      p, tx_state = run_update(p, o["tx"], g, spec)
      if run_after is not None:
        new_mstate = run_after(p, new_mstate, model_state, spec, batch, step)
      return p, {"tx": tx_state, "method": new_mstate}, new_ms

    params, opt_state, model_state = jax.lax.cond(
        metrics["nonfinite"] == 0, apply,
        lambda p, o, g, new_ms, new_mstate: (p, o, model_state),
        params, opt_state, grads, new_ms, new_mstate)
    return params, opt_state, model_state, metrics

  grads_fn = map_runs(functools.partial(run_grads, guard_single=False),
                      "vmap", kinds)
  update_fn = map_runs(run_update, "vmap", (RUN, RUN, RUN, RUN))
  after_fn = (None if run_after is None else
              map_runs(run_after, "vmap", kinds))

  def step_fn(state, specs, batch):
    s_count, g_count = specs["seed"].shape
    how = run_map if s_count * g_count > 1 else "unroll"
    if how == "vmap":
      grads, model_state, mstate, metrics = grads_fn(
          state.params, state.opt_state, state.model_state, specs, batch,
          state.step)
      ok = metrics["nonfinite"] == 0
      new_params, tx_state = update_fn(state.params, state.opt_state["tx"],
                                       grads, specs)
      if after_fn is not None:
        mstate = after_fn(new_params, mstate, state.model_state, specs,
                          batch, state.step)
      keep = run_map_lib.keep_where
      params = keep(ok, new_params, state.params)
      opt_state = keep(ok, {"tx": tx_state, "method": mstate},
                       state.opt_state)
      model_state = keep(ok, model_state, state.model_state)
    else:
      params, opt_state, model_state, metrics = map_runs(
          run_step, how, kinds, carry=(0, 1, 2))(
              state.params, state.opt_state, state.model_state, specs, batch,
              state.step)
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state,
                         model_state=model_state), metrics

  return step_lib.jit_step(step_fn, mesh, donate)


def init_opt_state(tx, params, method: MethodSpec, num_tasks: int):
  """{"tx": the optimizer's [S, G] state, "method": the method's}."""
  s, g = jax.tree.leaves(params)[0].shape[:2]
  return {"tx": jax.jit(jax.vmap(jax.vmap(tx.init)))(params),
          "method": init_method_state(method, num_tasks, (s, g))}
