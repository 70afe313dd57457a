"""The train step: written for one run, vmapped over runs, jit-sharded.

A *run* is one network trained on one task group with one learning rate and
one seed. Runs are stacked on two leading axes [S, G]:

  * S seeds ("streams"): each has its own data order and label masks, so the
    batch has a matching leading axis [S, B, ...];
  * G groups × learning rates within a seed: MTL (all tasks) and the T STL
    networks of seed s all see seed s's batch, so comparisons are paired.

    state = init_state(graphdef_fn, tx, specs)                 # [S, G] runs
    step_fn = make_train_step(graphdef, tx, loss_cfg, mesh)
    state, metrics = step_fn(state, specs, batch)               # one dispatch

The step is a pure function of pytrees `(state, specs, batch) -> (state,
metrics)`; randomness is `fold_in(key(seed), step)`, so a step's result
depends only on (seed, step) and the state, which makes resume exact.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from mtljax.tasks import losses
from mtljax import models
from mtljax.core import parallel
from mtljax.core.runs import MISSING_POLICIES

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def make_optimizer(opt_cfg: Any, total_steps: int) -> optax.GradientTransformation:
  """The optimizer with a unit peak learning rate.

  Each run's own learning rate multiplies the updates in the step, so one
  compiled program trains a whole learning-rate grid (the equal tuning budget
  is one program, not one per rate). For adam, adamw (decoupled decay) and
  sgd that scaling is exactly equivalent to passing the rate to optax.
  """
  if opt_cfg.schedule == "constant":
    sched = optax.constant_schedule(1.0)
  elif opt_cfg.schedule == "cosine":
    sched = optax.cosine_decay_schedule(1.0, max(total_steps, 1))
  else:
    sched = optax.warmup_cosine_decay_schedule(
        0.0, 1.0, opt_cfg.warmup_steps, max(total_steps, opt_cfg.warmup_steps + 1))
  if opt_cfg.name == "adam":
    base = optax.adam(sched)
  elif opt_cfg.name == "adamw":
    base = optax.adamw(sched, weight_decay=opt_cfg.weight_decay)
  else:
    base = optax.sgd(sched, momentum=opt_cfg.momentum or None)
  parts = []
  if opt_cfg.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt_cfg.grad_clip_norm))
  parts.append(base)
  return optax.chain(*parts)


def apply_missing_policy(labels, mask, policy):
  """How a run treats "?" labels (the missing-labels ablation).

  Args:
    labels: [B, T] 0/1 labels (values under mask=False are ignored).
    mask: [B, T] bool observed-label mask.
    policy: "mask" (the seed's rule: skip "?"), "negative" ("?" counts as a
      0 label) or "drop" (drop every example with any "?"); or its index in
      MISSING_POLICIES as a (traced) integer, so that runs with different
      policies can share one vmapped step.

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
  drop = policy == 2
  eff_mask = jnp.where(negative, True, mask & jnp.where(drop, keep, True)[:, None])
  weight = jnp.where(drop, keep.astype(jnp.float32), 1.0)
  return labels, eff_mask, weight


def run_loss(graphdef, params, spec, batch, rng, *, normalize: str,
             deterministic: bool = False):
  """One run's loss on one batch, restricted to the run's task group.

  Returns:
    (loss, per_task_loss [T]).
  """
  labels, mask, weight = apply_missing_policy(batch["labels"], batch["mask"],
                                              spec["missing_policy"])
  # The task group enters only through the mask: tasks outside the group get
  # exactly zero loss and gradient, so the run *is* a network for its group.
  mask = mask & (spec["task_mask"] > 0)
  logits = models.apply(graphdef, params, batch["image"], rng=rng,
                        deterministic=deterministic)
  loss = losses.masked_sigmoid_cross_entropy(logits, labels, mask, normalize)
  if normalize == "per_example":
    # (1/m) over the examples kept, not over the batch: dropping examples must
    # not also shrink the effective learning rate. (weight is all ones unless
    # the run drops examples, and then this is a no-op for other policies.)
    loss = loss * weight.shape[0] / jnp.maximum(weight.sum(), 1.0)
  per_task = losses.masked_sigmoid_cross_entropy_per_task(logits, labels, mask)
  return loss, per_task


def make_run_grads(graphdef, *, normalize: str) -> Callable:
  """One run's gradients and metrics: (params, spec, batch, step) -> ...

  Returns `(grads, metrics)`; metrics["nonfinite"] is 1 when the loss or the
  gradient norm is not finite. One reduction gives both the norm and the
  check: a NaN or inf in any gradient makes the sum of squares NaN or inf.
  (So does a finite gradient above ~1e19, whose square overflows float32; it
  counts as non-finite, as it should: Adam's second moment would overflow.)
  """
  def run_grads(params, spec, batch, step):
    rng = jax.random.fold_in(jax.random.key(spec["seed"]), step)

    def loss_fn(p):
      return run_loss(graphdef, p, spec, batch, rng, normalize=normalize)

    (loss, per_task), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    sq = sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
             for g in jax.tree.leaves(grads))
    ok = jnp.isfinite(loss) & jnp.isfinite(sq)
    metrics = {"loss": loss, "task_loss": per_task, "grad_norm": jnp.sqrt(sq),
               "nonfinite": (~ok).astype(jnp.int32)}
    return grads, metrics

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
                  normalize: str) -> Callable:
  """The step for ONE run: (params, opt_state, spec, batch, step) -> ...

  A non-finite loss or gradient leaves the run's params and optimizer state
  unchanged and is reported in the metrics ("nonfinite"); the loop decides
  whether that halts training or is counted and skipped.
  """
  run_grads = make_run_grads(graphdef, normalize=normalize)
  run_update = make_run_update(tx)

  def run_step(params, opt_state, spec, batch, step):
    grads, metrics = run_grads(params, spec, batch, step)
    # A cond, not where(ok, new, old): the update is then a computation of
    # its own, which XLA fuses into one in-place pass per state leaf. With a
    # select, XLA recomputes Adam's moments inside every consumer, so it must
    # copy the old moments first (2x slower step, docs/PERFORMANCE.md). Under
    # vmap a cond turns back into a select.
    params, opt_state = jax.lax.cond(
        metrics["nonfinite"] == 0,
        lambda p, o, g: run_update(p, o, g, spec),
        lambda p, o, g: (p, o), params, opt_state, grads)
    return params, opt_state, metrics

  return run_step


RUN_MAPS = ("vmap", "unroll", "scan")
# How each argument of a mapped function is laid out: "run" leaves have
# leading [S, G] axes, "seed" leaves a leading [S] axis (a seed's batch is
# shared by its G runs), "shared" leaves none (e.g. the step counter).
_RUN, _SEED, _SHARED = "run", "seed", "shared"


def _take(tree, *idx):
  return jax.tree.map(lambda x: x[idx], tree)


def _stack2(rows):
  """[[tree]*G]*S → one tree with leading [S, G] axes."""
  return jax.tree.map(lambda *xs: jnp.stack(xs),
                      *[jax.tree.map(lambda *ys: jnp.stack(ys), *row)
                        for row in rows])


def _map(fn: Callable, run_map: str, kinds: tuple[str, ...]) -> Callable:
  """Maps `fn` over [S, G] runs; `kinds` says how each argument is laid out."""
  if run_map == "vmap":
    inner = jax.vmap(fn, in_axes=tuple(0 if k == _RUN else None for k in kinds))
    return jax.vmap(inner, in_axes=tuple(None if k == _SHARED else 0
                                         for k in kinds))
  if run_map not in RUN_MAPS:
    raise ValueError(f"run_map must be one of {RUN_MAPS}; got {run_map!r}")

  def pick(a, k, s, g):
    return a if k == _SHARED else _take(a, s) if k == _SEED else _take(a, s, g)

  def unrolled(*args):
    s_count, g_count = _run_shape(args, kinds)
    rows = [[fn(*(pick(a, k, s, g) for a, k in zip(args, kinds)))
             for g in range(g_count)] for s in range(s_count)]
    return _stack2(rows)

  def scanned(*args):
    s_count, g_count = _run_shape(args, kinds)
    # Runs flattened to one axis (a free reshape), indexed by run number.
    args = [_flat_runs(a) if k == _RUN else a for a, k in zip(args, kinds)]

    def one(i):
      return fn(*(a if k == _SHARED else
                  _index(a, i // g_count) if k == _SEED else _index(a, i)
                  for a, k in zip(args, kinds)))
    return _unflat_runs(jax.lax.map(one, jnp.arange(s_count * g_count)),
                        s_count, g_count)

  return unrolled if run_map == "unroll" else scanned


def _flat_runs(tree):
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def _unflat_runs(tree, s_count, g_count):
  return jax.tree.map(
      lambda x: x.reshape((s_count, g_count) + x.shape[1:]), tree)


def _index(tree, i):
  return jax.tree.map(
      lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False), tree)


def _run_shape(args, kinds) -> tuple[int, int]:
  leaf = next(jax.tree.leaves(a)[0] for a, k in zip(args, kinds)
              if k == _RUN and jax.tree.leaves(a))
  return leaf.shape[0], leaf.shape[1]


def map_runs(fn: Callable, run_map: str = "vmap") -> Callable:
  """Maps a one-run step over [S, G] runs.

  `fn(params, opt_state, spec, batch, step)`. The G groups of one seed share
  that seed's batch; seeds each have their own batch stream ([S, B, ...]);
  the step counter is shared.

  Args:
    fn: the one-run function.
    run_map: "vmap" — one batched program (the design's default; best on
      GPU/TPU and for dense layers everywhere); "unroll" — R separate copies
      of the run inside the same jit; or "scan" — one copy of the run,
      applied to each run in turn by a loop inside the jit. On XLA:CPU a
      vmapped convolution lowers to a grouped convolution ~8-9x slower than
      R plain ones, and "unroll" compiles R copies (18 s for 40 CNN runs), so
      the loop picks "scan" for CNNs on CPU: as fast as R separate steps,
      compiled once (docs/PERFORMANCE.md). All give the same results.
  """
  return _map(fn, run_map, (_RUN, _RUN, _RUN, _SEED, _SHARED))


def default_run_map(encoder: str, backend: str | None = None) -> str:
  """"scan" for convolutions on CPU, "vmap" everywhere else."""
  backend = backend or jax.default_backend()
  return "scan" if (encoder == "cnn" and backend == "cpu") else "vmap"


def _scan_runs(run_step: Callable) -> Callable:
  """The train step's "scan" map: each run in turn, in a loop in the jit.

  The loop carries the whole state and writes each run's new state back in
  place; the cond-guarded update of make_run_step stays per run.
  """
  def scanned(params, opt_state, specs, batch, step):
    s_count, g_count = specs["seed"].shape
    flat_specs = _flat_runs(specs)

    def body(carry, i):
      p_all, o_all = carry
      p, o, m = run_step(_index(p_all, i), _index(o_all, i),
                         _index(flat_specs, i), _index(batch, i // g_count),
                         step)
      put = lambda t, new: jax.tree.map(
          lambda x, y: jax.lax.dynamic_update_index_in_dim(x, y, i, 0), t, new)
      return (put(p_all, p), put(o_all, o)), m

    (p_all, o_all), metrics = jax.lax.scan(
        body, (_flat_runs(params), _flat_runs(opt_state)),
        jnp.arange(s_count * g_count))
    return (_unflat_runs(p_all, s_count, g_count),
            _unflat_runs(o_all, s_count, g_count),
            _unflat_runs(metrics, s_count, g_count))

  return scanned


def _keep_where(ok, new, old):
  """Per run: `new` where ok[s, g], else `old` (leaves have [S, G] axes)."""
  def sel(a, b):
    return jnp.where(ok.reshape(ok.shape + (1,) * (a.ndim - ok.ndim)), a, b)
  return jax.tree.map(sel, new, old)


def make_train_step(graphdef, tx, *, normalize: str, mesh: Mesh,
                    donate: bool = True, run_map: str = "vmap") -> Callable:
  """The compiled, data-parallel step over all runs.

  Args:
    graphdef: the network's static structure.
    tx: optimizer from make_optimizer.
    normalize: loss normalisation (see losses.py).
    mesh: device mesh with a "data" axis.
    donate: donate the state buffers (in-place update).
    run_map: how runs are mapped, see map_runs.

  Returns:
    jitted `step(state, specs, batch) -> (state, metrics)`. `state` holds
    "step" (scalar), "params" and "opt_state" (leading [S, G] axes); `batch`
    leaves are [S, B, ...] with B split over the mesh.
  """
  if run_map not in RUN_MAPS:
    raise ValueError(f"run_map must be one of {RUN_MAPS}; got {run_map!r}")
  run_step = make_run_step(graphdef, tx, normalize=normalize)
  grads_fn = _map(make_run_grads(graphdef, normalize=normalize), "vmap",
                  (_RUN, _RUN, _SEED, _SHARED))
  update_fn = _map(make_run_update(tx), "vmap", (_RUN, _RUN, _RUN, _RUN))

  def step_fn(state, specs, batch):
    params, opt_state = state["params"], state["opt_state"]
    s_count, g_count = specs["seed"].shape
    if run_map == "scan" and s_count * g_count > 1:
      # One run at a time: its buffers stay in cache and the program is one
      # run's size, whatever R.
      params, opt_state, metrics = _scan_runs(run_step)(
          params, opt_state, specs, batch, state["step"])
    elif run_map in ("unroll", "scan") or s_count * g_count == 1:
      # Each run's update is guarded by its own cond (see make_run_step). A
      # single run is always stepped this way: a runs axis of size 1 only
      # costs (its bitcasts slow XLA:CPU's elementwise loops down).
      params, opt_state, metrics = map_runs(run_step, "unroll")(
          params, opt_state, specs, batch, state["step"])
    else:
      # One batched program; the guard is a per-run select (a cond would
      # become one under vmap anyway).
      grads, metrics = grads_fn(params, specs, batch, state["step"])
      ok = metrics["nonfinite"] == 0
      new_params, new_opt_state = update_fn(params, opt_state, grads, specs)
      params = _keep_where(ok, new_params, params)
      opt_state = _keep_where(ok, new_opt_state, opt_state)
    return dict(state, params=params, opt_state=opt_state,
                step=state["step"] + 1), metrics

  rep = parallel.replicated(mesh)
  data = parallel.batch_sharding(mesh, example_axis=1)
  return jax.jit(step_fn, in_shardings=(rep, rep, data),
                 out_shardings=(rep, rep),
                 donate_argnums=(0,) if donate else ())


def make_eval_fn(graphdef, mesh: Mesh, run_map: str = "vmap") -> Callable:
  """Jitted `logits(params[S, G], images[N, ...]) -> [S, G, N, T]`.

  Evaluation images are shared by every run and split over "data".
  """
  def run_logits(params, images):
    return models.apply(graphdef, params, images, deterministic=True)

  fn = _map(run_logits, run_map, (_RUN, _SHARED))
  rep = parallel.replicated(mesh)
  data = parallel.batch_sharding(mesh, example_axis=0)
  return jax.jit(fn, in_shardings=(rep, data), out_shardings=rep)


def init_params(model_cfg, image_shape, num_tasks: int, seeds, num_groups: int):
  """Stacked initial params [S, G, ...] and the graphdef.

  Every run of seed s starts from the same weights (key(seed)): the MTL network
  and the T STL networks of one seed share their initialisation, which pairs
  the comparison in initialisation as well as in data.
  """
  graphdef = models.graphdef(model_cfg, image_shape, num_tasks)

  def one(seed):
    return models.create(model_cfg, image_shape, num_tasks,
                         jax.random.key(seed))[1]

  def stacked(seed_array):
    return jax.tree.map(
        lambda x: jnp.broadcast_to(x[:, None],
                                   (x.shape[0], num_groups) + x.shape[1:]),
        jax.vmap(one)(seed_array))

  # One compiled program: op-by-op, each op would be a small compile of its own.
  return graphdef, jax.jit(stacked)(jnp.asarray(seeds, jnp.uint32))


def init_state(params, tx) -> dict:
  """The train state: step counter, stacked params and optimizer states."""
  opt_state = jax.jit(jax.vmap(jax.vmap(tx.init)))(params)
  return {"step": jnp.zeros((), jnp.int32), "params": params,
          "opt_state": opt_state}
