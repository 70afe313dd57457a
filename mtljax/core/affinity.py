"""Lookahead task affinity (TAG, Fifty et al. 2021) measured inside training.

For one run at step t, with shared parameters θ_s and task i's loss L_i:

    θ_s|i = θ_s − η ∇_{θ_s} L_i(X_t)                 (a lookahead SGD step)
    Z[i→j] = 1 − L_j(X_t; θ_s|i, θ_j) / L_j(X_t; θ_s, θ_j)

Z[i→j] > 0: a step on task i alone lowers task j's loss on the same batch
(i helps j); < 0: it raises it. TAG averages Z over training and groups the
tasks whose mutual affinity is high (analysis/grouping_search.py).

Cost: one forward pass, T backward passes (the per-task Jacobian rows of the
methods' step, method_parts._jacobian) and T forward passes, at the steps
where it is measured only (config.grouping.affinity_every): the train loop
calls the jitted `make_affinity_fn` function before the step of those steps,
and nothing else changes, so runs with and without affinity train bit for
bit alike.

L_i is task i's mean loss over its observed labels in the batch (TAG's
definition: the task's own loss, whatever config.loss.normalize weights it
by), restricted by the run's task group and missing-label policy as in
training. Entries with a task that has no label in the batch, or lies
outside the group, are not finite and are not counted.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtljax.core import parallel
from mtljax.core.method_parts import _jacobian, _shared_mask
from mtljax.core.run_map import RUN, SEED, SHARED, map_runs
from mtljax.tasks import losses


def make_run_affinity(graphdef, *, tasks=None, arch: str = "hps",
                      lookahead_lr: float = 0.0) -> Callable:
  """ONE run's affinity matrix on one batch.

  Args:
    graphdef: the network's static structure.
    tasks: the dataset's Tasks (None: every task binary with one logit).
    arch: the architecture (its `task_axis` says which parameters are
      shared: only those take the lookahead step).
    lookahead_lr: η of the lookahead SGD step; 0: the run's learning rate.

  Returns:
    `(params, model_state, spec, batch, step) -> Z [T, T]` (float32; NaN
    where task i or j has no label in the batch or is outside the group).
  """
  from mtljax import models  # pylint: disable=g-import-not-at-top
  from mtljax.core import step as step_lib  # pylint: disable=g-import-not-at-top
  tasks = None if tasks is None else tuple(tasks)
  is_binary = None if tasks is None else np.array(
      [t.type == "binary" for t in tasks])

  def run_affinity(params, model_state, spec, batch, step):
    # The train step's key: dropout draws the same masks in every pass, so
    # that Z sees the parameter change only.
    rng = jax.random.fold_in(jax.random.key(spec["seed"]), step)
    labels, mask, _ = step_lib.apply_missing_policy(
        batch["labels"], batch["mask"], spec["missing_policy"], is_binary)
    mask = mask & (spec["task_mask"] > 0)
    count = mask.sum(axis=0).astype(jnp.float32)

    def task_losses(p):
      out, _ = models.apply(graphdef, p, model_state, batch["image"], rng=rng,
                            deterministic=False)
      out = out.astype(jnp.float32)
      elem = (losses._masked_elementwise(out, labels, mask)  # pylint: disable=protected-access
              if tasks is None else
              losses.task_elementwise(out, labels, mask, tasks))
      return elem.sum(axis=0) / jnp.maximum(count, 1.0)

    before, vjp = jax.vjp(task_losses, params)
    num_tasks = before.shape[0]
    (jac,) = _jacobian(vjp, jnp.eye(num_tasks, dtype=jnp.float32))
    flags = _shared_mask(arch, params)
    lr = (jnp.float32(lookahead_lr) if lookahead_lr > 0
          else spec["learning_rate"])

    def after(i):
      moved = jax.tree.map(
          lambda x, j, shared: (x - (lr * j[i]).astype(x.dtype)) if shared
          else x, params, jac, flags)
      return task_losses(moved)

    rows = jnp.stack([after(i) for i in range(num_tasks)])  # [i, j]
    z = 1.0 - rows / jnp.where(before > 0, before, 1.0)[None, :]
    present = (count > 0) & (before > 0)
    return jnp.where(present[:, None] & present[None, :], z, jnp.nan)

  return run_affinity


def make_affinity_fn(graphdef, *, mesh, groups: Sequence[int], tasks=None,
                     arch: str = "hps", lookahead_lr: float = 0.0,
                     run_map: str = "vmap") -> Callable:
  """The jitted measurement: adds one step's Z of the chosen runs to `acc`.

  Args:
    graphdef: the network's static structure.
    mesh: the device mesh (the batch is split over "data").
    groups: indices, on the program's G axis, of the runs measured (the
      MTL runs).
    tasks, arch, lookahead_lr: as in `make_run_affinity`.
    run_map: how runs are mapped (the program's; run_map.map_runs).

  Returns:
    `fn(acc, state, specs, batch) -> acc`, with acc = {"sum": [S, G', T, T]
    float32, "count": [S, G', T, T] int32} (see `init_acc`); `acc` is
    donated. The state is only read.
  """
  idx = np.asarray(tuple(groups), np.int32)
  mapped = map_runs(make_run_affinity(graphdef, tasks=tasks, arch=arch,
                                      lookahead_lr=lookahead_lr),
                    run_map, (RUN, RUN, RUN, SEED, SHARED))

  def fn(acc, state, specs, batch):
    pick = lambda tree: jax.tree.map(lambda x: x[:, idx], tree)
    z = mapped(pick(state.params), pick(state.model_state), pick(specs),
               batch, state.step)
    ok = jnp.isfinite(z)
    return {"sum": acc["sum"] + jnp.where(ok, z, 0.0),
            "count": acc["count"] + ok.astype(jnp.int32)}

  rep = parallel.replicated(mesh)
  data = parallel.batch_sharding(mesh, example_axis=1)
  return jax.jit(fn, in_shardings=(rep, rep, rep, data), out_shardings=rep,
                 donate_argnums=(0,))


def init_acc(num_seeds: int, num_groups: int, num_tasks: int) -> dict:
  """The empty accumulator of `make_affinity_fn` (host numpy arrays)."""
  shape = (num_seeds, num_groups, num_tasks, num_tasks)
  return {"sum": np.zeros(shape, np.float32),
          "count": np.zeros(shape, np.int32)}


def mean_affinity(acc: dict) -> np.ndarray:
  """[S, G', T, T] mean Z over the measurements (NaN where none counted)."""
  s = np.asarray(acc["sum"], np.float64)
  n = np.asarray(acc["count"], np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(n > 0, s / np.maximum(n, 1.0), np.nan)


class Meter:
  """A program's affinity measurement, as the train loop drives it.

      meter = Meter.for_program(prog, config, graphdef, mesh, tasks, seeds,
                                run_map)          # None: nothing to measure
      meter.measure(step, state, specs, batch)    # before the step
      meta = meter.to_json(); meter.load_json(meta)  # checkpoint and resume
      meter.means()                               # {group index: [S, T, T]}

  The accumulator stays on device between measurements; it is fetched only
  to be saved (in the checkpoint's JSON item: float32 sums round-trip
  exactly, so a resumed run's affinity equals an uninterrupted one's).
  """

  def __init__(self, fn, groups, every: int, acc, rep):
    self._fn = fn
    self.groups = tuple(groups)
    self.every = every
    self._rep = rep
    self.acc = jax.device_put(acc, rep)

  @classmethod
  def for_program(cls, prog, config, graphdef, mesh, tasks, seeds,
                  run_map: str):
    """The meter of a runs_lib.Program, or None (affinity off, no MTL run)."""
    every = config.grouping.affinity_every
    groups = [g for g, gr in enumerate(prog.groups)
              if len(gr.tasks) == len(gr.task_mask) > 1]
    if not every or not groups:
      return None
    num_tasks = len(prog.groups[0].task_mask)
    fn = make_affinity_fn(graphdef, mesh=mesh, groups=groups, tasks=tasks,
                          arch=config.model.get("arch", "hps"),
                          lookahead_lr=config.grouping.lookahead_lr,
                          run_map=run_map)
    return cls(fn, groups, every,
               init_acc(len(seeds), len(groups), num_tasks),
               parallel.replicated(mesh))

  def measure(self, step: int, state, specs, batch) -> None:
    if step % self.every == 0:
      self.acc = self._fn(self.acc, state, specs, batch)

  def to_json(self) -> dict:
    acc = jax.device_get(self.acc)
    return {"groups": list(self.groups), "sum": acc["sum"].tolist(),
            "count": acc["count"].tolist()}

  def load_json(self, meta: dict) -> None:
    if list(meta.get("groups", ())) != list(self.groups):
      raise ValueError(f"affinity groups {meta.get('groups')} in the "
                       f"checkpoint, {list(self.groups)} here")
    self.acc = jax.device_put(
        {"sum": np.asarray(meta["sum"], np.float32),
         "count": np.asarray(meta["count"], np.int32)}, self._rep)

  def means(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{group index: ([S, T, T] mean Z, [S] measurements counted)}."""
    acc = jax.device_get(self.acc)
    z = mean_affinity(acc)
    n = np.asarray(acc["count"]).max(axis=(2, 3))
    return {g: (z[:, k], n[:, k]) for k, g in enumerate(self.groups)}
