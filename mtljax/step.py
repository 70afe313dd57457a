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

from mtljax import losses
from mtljax import models
from mtljax import parallel
from mtljax.runs import MISSING_POLICIES

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


def _tree_all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves))


def make_run_step(graphdef, tx: optax.GradientTransformation, *,
                  normalize: str) -> Callable:
  """The step for ONE run: (params, opt_state, spec, batch, step) -> ...

  A non-finite loss or gradient leaves the run's params and optimizer state
  unchanged and is reported in the metrics ("nonfinite"); the loop decides
  whether that halts training or is counted and skipped.
  """
  def run_step(params, opt_state, spec, batch, step):
    rng = jax.random.fold_in(jax.random.key(spec["seed"]), step)

    def loss_fn(p):
      return run_loss(graphdef, p, spec, batch, rng, normalize=normalize)

    (loss, per_task), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    updates = jax.tree.map(lambda u: spec["learning_rate"] * u, updates)
    new_params = optax.apply_updates(params, updates)
    ok = jnp.isfinite(loss) & _tree_all_finite(grads)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    metrics = {"loss": loss, "task_loss": per_task,
               "grad_norm": optax.tree.norm(grads),
               "nonfinite": (~ok).astype(jnp.int32)}
    return keep(new_params, params), keep(new_opt_state, opt_state), metrics

  return run_step


RUN_MAPS = ("vmap", "unroll")


def _take(tree, *idx):
  return jax.tree.map(lambda x: x[idx], tree)


def _stack2(rows):
  """[[tree]*G]*S → one tree with leading [S, G] axes."""
  return jax.tree.map(lambda *xs: jnp.stack(xs),
                      *[jax.tree.map(lambda *ys: jnp.stack(ys), *row)
                        for row in rows])


def map_runs(fn: Callable, run_map: str = "vmap") -> Callable:
  """Maps a one-run step over [S, G] runs.

  `fn(params, opt_state, spec, batch, step)`. The G groups of one seed share
  that seed's batch; seeds each have their own batch stream ([S, B, ...]);
  the step counter is shared.

  Args:
    fn: the one-run function.
    run_map: "vmap" — one batched program (the design's default; best on
      GPU/TPU and for dense layers everywhere); or "unroll" — R separate
      copies of the run inside the same jit. On XLA:CPU a vmapped convolution
      lowers to a grouped convolution that is ~8-9x slower than R plain ones
      (measured in docs/PERFORMANCE.md), so the loop picks "unroll" for
      CNNs on CPU. Both give the same results (tested).
  """
  if run_map == "vmap":
    inner = jax.vmap(fn, in_axes=(0, 0, 0, None, None))
    return jax.vmap(inner, in_axes=(0, 0, 0, 0, None))
  if run_map != "unroll":
    raise ValueError(f"run_map must be one of {RUN_MAPS}; got {run_map!r}")

  def unrolled(params, opt_state, specs, batch, step):
    s_count, g_count = specs["seed"].shape
    rows = [[fn(_take(params, s, g), _take(opt_state, s, g),
                _take(specs, s, g), _take(batch, s), step)
             for g in range(g_count)] for s in range(s_count)]
    return _stack2(rows)

  return unrolled


def default_run_map(encoder: str, backend: str | None = None) -> str:
  """"unroll" for convolutions on CPU, "vmap" everywhere else."""
  backend = backend or jax.default_backend()
  return "unroll" if (encoder == "cnn" and backend == "cpu") else "vmap"


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
  run_step = make_run_step(graphdef, tx, normalize=normalize)
  stepped = map_runs(run_step, run_map)

  def step_fn(state, specs, batch):
    params, opt_state, metrics = stepped(
        state["params"], state["opt_state"], specs, batch, state["step"])
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

  if run_map == "vmap":
    fn = jax.vmap(jax.vmap(run_logits, in_axes=(0, None)), in_axes=(0, None))
  else:
    def fn(params, images):
      s_count, g_count = jax.tree.leaves(params)[0].shape[:2]
      return _stack2([[run_logits(_take(params, s, g), images)
                       for g in range(g_count)] for s in range(s_count)])
  rep = parallel.replicated(mesh)
  data = parallel.batch_sharding(mesh, example_axis=0)
  return jax.jit(fn, in_shardings=(rep, data), out_shardings=rep)


def init_params(model_cfg, image_shape, num_tasks: int, seeds, num_groups: int):
  """Stacked initial params [S, G, ...] and the graphdef.

  Every run of seed s starts from the same weights (key(seed)): the MTL network
  and the T STL networks of one seed share their initialisation, which pairs
  the comparison in initialisation as well as in data.
  """
  graphdef, _ = models.create(model_cfg, image_shape, num_tasks,
                              jax.random.key(0))

  def one(seed):
    return models.create(model_cfg, image_shape, num_tasks,
                         jax.random.key(seed))[1]

  per_seed = jax.jit(jax.vmap(one))(jnp.asarray(seeds, jnp.uint32))
  params = jax.tree.map(
      lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], num_groups) + x.shape[1:]),
      per_seed)
  return graphdef, params


def init_state(params, tx) -> dict:
  """The train state: step counter, stacked params and optimizer states."""
  opt_state = jax.vmap(jax.vmap(tx.init))(params)
  return {"step": jnp.zeros((), jnp.int32), "params": params,
          "opt_state": opt_state}
