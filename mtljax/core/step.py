"""The train step: written for one run, mapped over runs, jit-sharded.

A *run* is one network trained on one task group with one learning rate and
one seed. Runs are stacked on two leading axes [S, G]:

  * S seeds ("streams"): each has its own data order and label masks, so the
    batch has a matching leading axis [S, B, ...];
  * G groups × learning rates within a seed: MTL (all tasks) and the T STL
    networks of seed s all see seed s's batch, so comparisons are paired.

    graphdef, params, model_state = state.init_params(
        model_cfg, image_shape, num_tasks, seeds, num_groups)
    train_state = state.init_state(params, model_state, tx)    # [S, G] runs
    step_fn = make_train_step(graphdef, tx, normalize="per_example",
                              mesh=mesh, run_map="vmap")
    train_state, metrics = step_fn(train_state, specs, batch)   # one dispatch
    logits = make_eval_fn(graphdef, mesh)(params, model_state, images)

The step is a pure function of pytrees `(TrainState, specs, batch) ->
(TrainState, metrics)`; randomness is `fold_in(key(seed), step)`, so a step's
result depends only on (seed, step) and the state, which makes resume exact.
Each piece is written for ONE run (make_run_grads, make_run_update,
make_run_step) and mapped over the runs by run_map.map_runs.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from mtljax import models
from mtljax import registry
from mtljax.tasks import losses
from mtljax.core import parallel
from mtljax.core import run_map as run_map_lib
from mtljax.core.run_map import RUN, SEED, SHARED, map_runs
from mtljax.config import MISSING_POLICIES
from mtljax.core import optim

# Kept here too: callers build the optimizer from the step module.
make_optimizer = optim.make_optimizer


def apply_missing_policy(labels, mask, policy, is_binary=None):
  """How a run treats "?" labels (the missing-labels ablation).

  Args:
    labels: [B, T] labels (values under mask=False are ignored).
    mask: [B, T] bool observed-label mask.
    policy: "mask" (the lecture's rule: skip "?"), "negative" ("?" counts as a
      0 label) or "drop" (drop every example with any "?"); or its index in
      MISSING_POLICIES as a (traced) integer, so that runs with different
      policies can share one vmapped step.
    is_binary: [T] bool, the tasks that "negative" applies to (a "?" of a
      multiclass or regression task has no "negative" value; the config
      check refuses that policy for such tasks). None: every task.

  Returns:
    (labels, mask, example_weight): example_weight [B] is 1 for examples that
    count towards the per-example normaliser.
  """
  if isinstance(policy, str):
    if policy not in MISSING_POLICIES:
      raise ValueError(f"loss.missing_policy must be one of {MISSING_POLICIES};"
                       f" got {policy!r}")
    policy = MISSING_POLICIES.index(policy)
  keep = mask.all(axis=-1)
  labels = jnp.where(mask, labels, 0)
  negative = policy == 1
  if is_binary is not None and not np.all(is_binary):
    negative = negative & jnp.asarray(is_binary)[None, :]
  drop = policy == 2
  eff_mask = jnp.where(negative, True, mask & jnp.where(drop, keep, True)[:, None])
  weight = jnp.where(drop, keep.astype(jnp.float32), 1.0)
  return labels, eff_mask, weight


def run_loss(graphdef, params, model_state, spec, batch, rng, *,
             normalize: str, deterministic: bool = False, tasks=None,
             stage0=None):
  """One run's loss on one batch, restricted to the run's task group.

  `tasks` (the dataset's `mtljax.tasks.Task`s) gives each task's loss;
  None means every task is binary (the lecture's masked logistic loss).
  `stage0` is the encoder's first stage's output, when the caller computed
  it (core/stem.py).

  Returns:
    (loss, (per_task_loss [T], new_model_state)): the form that
    jax.value_and_grad(..., has_aux=True) takes. new_model_state is the
    network's non-parameter state after the forward pass (BatchNorm's
    running statistics move in training mode).
  """
  is_binary = None if tasks is None else np.array(
      [t.type == "binary" for t in tasks])
  labels, mask, weight = apply_missing_policy(batch["labels"], batch["mask"],
                                              spec["missing_policy"], is_binary)
  # The task group enters only through the mask: tasks outside the group get
  # exactly zero loss and gradient, so the run *is* a network for its group.
  mask = mask & (spec["task_mask"] > 0)
  logits, new_model_state = models.apply(
      graphdef, params, model_state, batch["image"], rng=rng,
      deterministic=deterministic, stage0=stage0)
  if "task_weights" in spec:
    # Static task weights: each task's per-label losses scaled by c_t, then
    # the same normalisation (task_loss stays each task's unweighted mean).
    elem = (losses._masked_elementwise(logits, labels, mask)  # pylint: disable=protected-access
            if tasks is None else
            losses.task_elementwise(logits, labels, mask, tasks))
    count = mask.sum(axis=0).astype(elem.dtype)
    per_task = elem.sum(axis=0) / jnp.maximum(count, 1.0)
    loss = registry.LOSS_WEIGHTINGS.get(normalize)(
        elem * spec["task_weights"][None, :], mask)
  elif tasks is None:
    loss = losses.masked_sigmoid_cross_entropy(logits, labels, mask, normalize)
    per_task = losses.masked_sigmoid_cross_entropy_per_task(logits, labels,
                                                            mask)
  else:
    loss, per_task = losses.task_losses(logits, labels, mask, tasks, normalize)
  if normalize == "per_example":
    # (1/m) over the examples kept, not over the batch: dropping examples must
    # not also shrink the effective learning rate. (weight is all ones unless
    # the run drops examples, and then this is a no-op for other policies.)
    loss = loss * weight.shape[0] / jnp.maximum(weight.sum(), 1.0)
  return loss, (per_task, new_model_state)


def make_run_grads(graphdef, *, normalize: str, tasks=None) -> Callable:
  """One run's gradients: (params, model_state, spec, batch, step) -> ...

  Returns `(grads, new_model_state, metrics)`; metrics["nonfinite"] is 1
  when the loss or the gradient norm is not finite. One reduction gives both
  the norm and the check: a NaN or inf in any gradient makes the sum of
  squares NaN or inf. (So does a finite gradient above ~1e19, whose square
  overflows float32; it counts as non-finite, as it should: Adam's second
  moment would overflow.)
  """
  def run_grads(params, model_state, spec, batch, step):
    rng = jax.random.fold_in(jax.random.key(spec["seed"]), step)

    def loss_fn(p):
      return run_loss(graphdef, p, model_state, spec, batch, rng,
                      normalize=normalize, tasks=tasks)

    (loss, (per_task, new_model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params)
    sq = sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
             for g in jax.tree.leaves(grads))
    ok = jnp.isfinite(loss) & jnp.isfinite(sq)
    metrics = {"loss": loss, "task_loss": per_task, "grad_norm": jnp.sqrt(sq),
               "nonfinite": (~ok).astype(jnp.int32)}
    return grads, new_model_state, metrics

  return run_grads


def make_run_update(tx: optax.GradientTransformation) -> Callable:
  """One run's optimizer step: (params, opt_state, grads, spec) -> (p, s).

  Unguarded: the caller keeps the old state of runs whose step was not
  finite (see make_run_step and make_train_step).
  """
  def run_update(params, opt_state, grads, spec):
    updates, new_opt_state = tx.update(grads, opt_state, params)
    updates = jax.tree.map(lambda u: spec["learning_rate"] * u, updates)
    return optax.apply_updates(params, updates), new_opt_state

  return run_update


def make_run_step(graphdef, tx: optax.GradientTransformation, *,
                  normalize: str, tasks=None) -> Callable:
  """The step for ONE run.

  `(params, opt_state, model_state, spec, batch, step) -> (params,
  opt_state, model_state, metrics)`. A non-finite loss or gradient leaves
  the run's params, optimizer state and model state unchanged and is
  reported in the metrics ("nonfinite"); the loop decides whether that halts
  training or is counted and skipped.
  """
  run_grads = make_run_grads(graphdef, normalize=normalize, tasks=tasks)
  run_update = make_run_update(tx)

  def run_step(params, opt_state, model_state, spec, batch, step):
    grads, new_model_state, metrics = run_grads(params, model_state, spec,
                                                batch, step)
    # A cond, not where(ok, new, old): the update is then a computation of
    # its own, which XLA fuses into one in-place pass per state leaf. With a
    # select, XLA recomputes Adam's moments inside every consumer, so it must
    # copy the old moments first (2x slower step, docs/PERFORMANCE.md). Under
    # vmap a cond turns back into a select.
    params, opt_state, model_state = jax.lax.cond(
        metrics["nonfinite"] == 0,
        lambda p, o, m, g, new_m: run_update(p, o, g, spec) + (new_m,),
        lambda p, o, m, g, new_m: (p, o, m),
        params, opt_state, model_state, grads, new_model_state)
    return params, opt_state, model_state, metrics

  return run_step


def make_train_step(graphdef, tx, *, normalize: str, mesh: Mesh,
                    donate: bool = True, run_map: str = "vmap",
                    tasks=None, method=None,
                    fuse_stem: bool = False) -> Callable:
  """The compiled, data-parallel step over all runs.

  Args:
    graphdef: the network's static structure.
    tx: optimizer from make_optimizer.
    normalize: loss normalisation (see losses.py).
    mesh: device mesh with a "data" axis.
    donate: donate the state buffers (in-place update).
    run_map: how runs are mapped: "vmap", "unroll" or "scan"
      (run_map.map_runs).
    tasks: the dataset's `mtljax.tasks.Task`s (each task's loss and output
      columns); None: every task is binary with one logit.
    method: a method_step.MethodSpec (a loss weighting or a gradient
      aggregator, config.method); None or an inactive one: the classic
      step. With a method the state's opt_state must come from
      method_step.init_opt_state.
    fuse_stem: under run_map "scan" (and with no method), compute each
      seed's first CNN stages as one (core/stem.py). The caller checks
      that the network is one that stem.fusable accepts.

  Returns:
    jitted `step(state, specs, batch) -> (state, metrics)`. `state` is a
    state.TrainState (per-run leaves [S, G, ...]); `batch` leaves are
    [S, B, ...] with B split over the mesh; metrics leaves are [S, G, ...].
  """
  if run_map not in run_map_lib.RUN_MAPS:
    raise ValueError(f"run_map must be one of {run_map_lib.RUN_MAPS}; got "
                     f"{run_map!r}")
  tasks = None if tasks is None else tuple(tasks)
  if method is not None and method.active:
    from mtljax.core import method_step  # pylint: disable=g-import-not-at-top
    return method_step.make_train_step(
        graphdef, tx, normalize=normalize, mesh=mesh, donate=donate,
        run_map=run_map, tasks=tasks, method=method)
  run_step = make_run_step(graphdef, tx, normalize=normalize, tasks=tasks)
  fused_fn = None
  if fuse_stem and run_map == "scan":
    from mtljax.core import stem  # pylint: disable=g-import-not-at-top
    fused_fn = stem.make_fused_step(graphdef, tx, normalize=normalize,
                                    tasks=tasks)
    fits = stem.fits
  grads_fn = map_runs(make_run_grads(graphdef, normalize=normalize,
                                     tasks=tasks), "vmap",
                      (RUN, RUN, RUN, SEED, SHARED))
  update_fn = map_runs(make_run_update(tx), "vmap", (RUN, RUN, RUN, RUN))

  def step_fn(state, specs, batch):
    s_count, g_count = specs["seed"].shape
    # A single run is always stepped unrolled: a runs axis of size 1 only
    # costs (its bitcasts slow XLA:CPU's elementwise loops down).
    how = run_map if s_count * g_count > 1 else "unroll"
    if (how == "scan" and fused_fn is not None and g_count > 1
        and fits(state.params, batch["image"].shape)):
      return fused_fn(state, specs, batch)
    if how == "vmap":
      # One batched program; the guard is a per-run select (a cond would
      # become one under vmap anyway).
      grads, model_state, metrics = grads_fn(
          state.params, state.model_state, specs, batch, state.step)
      ok = metrics["nonfinite"] == 0
      new_params, new_opt_state = update_fn(state.params, state.opt_state,
                                            grads, specs)
      # Looked up when traced: the bench swaps it to measure the guard.
      keep = run_map_lib.keep_where
      params = keep(ok, new_params, state.params)
      opt_state = keep(ok, new_opt_state, state.opt_state)
      model_state = keep(ok, model_state, state.model_state)
    else:
      # Each run's update is guarded by its own cond (see make_run_step).
      # Under "scan" one run at a time: its buffers stay in cache and the
      # program is one run's size, whatever R; the carried params, opt_state
      # and model_state are written back in place.
      params, opt_state, model_state, metrics = map_runs(
          run_step, how, (RUN, RUN, RUN, RUN, SEED, SHARED), carry=(0, 1, 2))(
              state.params, state.opt_state, state.model_state, specs, batch,
              state.step)
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state,
                         model_state=model_state), metrics

  return jit_step(step_fn, mesh, donate)


def jit_step(step_fn: Callable, mesh: Mesh, donate: bool) -> Callable:
  """jit of `step(state, specs, batch)`: the batch split over "data", the
  state and specs replicated, the state donated (shared by every step)."""
  rep = parallel.replicated(mesh)
  data = parallel.batch_sharding(mesh, example_axis=1)
  return jax.jit(step_fn, in_shardings=(rep, rep, data),
                 out_shardings=(rep, rep),
                 donate_argnums=(0,) if donate else ())


def make_eval_fn(graphdef, mesh: Mesh, run_map: str = "vmap", *,
                 fuse_stem: bool = False) -> Callable:
  """Jitted `logits(params, model_state, images[N, ...]) -> [S, G, N, O]`.

  O is the number of head outputs (T when every task has one).

  params and model_state have leading [S, G] axes (pass best_params with
  best_model_state); the network runs in inference mode (no dropout,
  BatchNorm's running statistics). Evaluation images are shared by every
  run and split over "data". `fuse_stem` as make_train_step's:
  under "scan", each seed's first CNN stages run as one (core/stem.py).
  """
  def run_logits(params, model_state, images):
    return models.apply(graphdef, params, model_state, images,
                        deterministic=True)[0]

  if fuse_stem and run_map == "scan":
    from mtljax.core import stem  # pylint: disable=g-import-not-at-top
    fn = stem.make_fused_logits(graphdef)
  else:
    fn = map_runs(run_logits, run_map, (RUN, RUN, SHARED))
  rep = parallel.replicated(mesh)
  data = parallel.batch_sharding(mesh, example_axis=0)
  return jax.jit(fn, in_shardings=(rep, rep, data), out_shardings=rep)
