"""train_and_evaluate: the loop around the compiled step.

    results = train_and_evaluate(config, workdir)

Sections, in order: workdir and logging; mesh; input pipeline and evaluation
splits; programs (arms × widths) with their models, optimizers and stacked
states; checkpoint restore; the train loop (step, log, evaluate, select,
checkpoint); final test evaluation of the best-by-validation parameters; and
results.json.

Guarantees a researcher can rely on:
  * Pairing: every run of seed s (MTL, each STL network, each learning rate)
    sees the same batches, the same label masks and the same initial weights.
  * Exact resume: randomness is fold_in(key(seed), step) and the batch at step
    k is a pure function of (seed, k), so a run killed at any point and started
    again with the same command gives bit-identical results on CPU.
  * Model selection on validation: each run keeps its best parameters by the
    validation selection metric (Caruana 1997: MTL without early stopping often
    looks worse than it is); test metrics are of those parameters only.
  * Nothing is lost: checkpoints are atomic, a corrupt newest one falls back to
    the previous, SIGTERM saves before exit, and a non-finite loss halts (or
    is skipped, if configured) without touching the last good checkpoint.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np

from mtljax import errors
from mtljax.run import checkpoint as ckpt_lib
from mtljax import config as config_lib
from mtljax import data as data_lib
from mtljax import models
from mtljax.run import evaluate
from mtljax.core import affinity as affinity_lib
from mtljax.core import parallel
from mtljax.run import preflight
from mtljax.run import results as results_lib
from mtljax.core import run_map as run_map_lib
from mtljax.core import stem as stem_lib
from mtljax.core import runs as runs_lib
from mtljax.core import state as state_lib
from mtljax.core import step as step_lib
from mtljax.run import workdir as workdir_lib
from mtljax.run import writers

log = logging.getLogger("mtljax")

NonFiniteError = errors.NonFiniteError


Preempted = errors.Preempted


# Kept here too: callers and older code import them from train.
computational_fields = workdir_lib.computational_fields
fingerprint = workdir_lib.fingerprint


def _update_best(state: state_lib.TrainState, scores, step
                 ) -> state_lib.TrainState:
  """Keeps each run's parameters and model state when its score improves."""
  better = scores > state.best_score
  keep = lambda new, old: run_map_lib.keep_where(better, new, old)
  return state.replace(
      best_params=keep(state.params, state.best_params),
      best_model_state=keep(state.model_state, state.best_model_state),
      best_score=jnp.where(better, scores, state.best_score),
      best_step=jnp.where(better, step, state.best_step))


class _Program:
  """A runs_lib.Program with its compiled functions and device state."""

  def __init__(self, prog, config, spec, seeds, mesh, tx):
    self.prog = prog
    graphdef, params, model_state = state_lib.init_params(
        prog.model_cfg, spec.image_shape, spec.tasks, seeds,
        prog.num_groups)
    self.rep = parallel.replicated(mesh)
    method = prog.method if prog.uses_method else None
    self.state = jax.device_put(
        state_lib.init_state(params, model_state, tx, method,
                             len(spec.tasks)), self.rep)
    self.specs = jax.device_put(prog.specs(seeds), self.rep)
    # The tasks each run's checkpoint is selected by.
    self.task_masks = evaluate.selection_masks(
        [gr.task_mask for gr in prog.groups], config.train.selection_tasks)
    run_map = config.train.run_map
    if run_map == "auto":
      run_map = run_map_lib.default_run_map(
          models.is_convolutional(prog.model_cfg))
    # Each seed's first CNN stages as one wide stage (core/stem.py).
    fused = {"fuse_stem": (config.train.fuse_stem
                           and stem_lib.fusable(prog.model_cfg))}
    self.step_fn = step_lib.make_train_step(
        graphdef, tx, normalize=config.loss.normalize, mesh=mesh,
        run_map=run_map, tasks=spec.tasks, method=method,
        **fused)
    self.eval_fn = step_lib.make_eval_fn(graphdef, mesh, run_map, **fused)
    self.update_best = jax.jit(_update_best, donate_argnums=(0,))
    # TAG's lookahead affinity of the MTL runs (config.grouping).
    self.affinity = affinity_lib.Meter.for_program(
        prog, config, graphdef, mesh, spec.tasks, seeds, run_map)
    self.param_counts = runs_lib.group_param_counts(
        prog, spec.image_shape, spec.tasks)
    # A grouping search's FLOP budgets need each network's cost.
    self.flops = (runs_lib.group_flops(prog, spec.image_shape, spec.tasks)
                  if config.grouping.groups else None)

  def abstract_state(self):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.rep),
        self.state)


def _nonfinite_message(step, prog, metrics, task_names, saved) -> str:
  """The halt message; `step` counts completed steps, like logs and ckpts."""
  bad = np.argwhere(np.asarray(metrics["nonfinite"]) > 0)
  s, g = bad[0]
  group = prog.prog.groups[g]
  task_loss = np.asarray(metrics["task_loss"])[s, g]
  tasks = [task_names[t] for t in range(len(task_names))
           if not np.isfinite(task_loss[t])]
  where = (f"in the loss of task(s) {', '.join(tasks)}" if tasks
           else "in the gradients")
  kept = (f"the last checkpoint (step {saved[-1]}) is intact" if saved
          else "no checkpoint had been saved yet")
  return (f"non-finite value in step {step} {where} (arm {group.arm}, seed "
          f"index {s}, learning rate {group.learning_rate:g}); "
          f"{int(bad.shape[0])} run(s) affected. The update was not applied "
          f"and {kept}. Set config.train.nonfinite_policy=skip to skip such "
          "steps instead.")


def _arm_means(prog, per_step: dict) -> dict:
  out = {}
  for arm in dict.fromkeys(g.arm for g in prog.prog.groups):
    idx = [i for i, g in enumerate(prog.prog.groups) if g.arm == arm]
    out[arm] = {k: float(np.mean(np.asarray(v)[:, idx]))
                for k, v in per_step.items() if k in ("loss", "grad_norm")}
  return out


def train_and_evaluate(config, workdir: str, condition: dict | None = None,
                       *, overwrite: bool = False) -> dict:
  """Trains every run of `config` and writes results.json to `workdir`.

  Args:
    config: an experiment config (validated again here).
    workdir: output directory; an unfinished run of the same config in it is
      resumed, and a workdir made by another config is refused.
    condition: the sweep fields that define this point (recorded in results).
    overwrite: if the workdir was made by another config, move its contents
      to `<workdir>.old[.n]` (nothing is deleted) and start afresh.

  Returns:
    The results dict (also written to workdir/results.json).

  Raises:
    ConfigError, DataError, CheckpointError: user errors, raised before any
      compilation and without touching existing checkpoints or results.
    NonFiniteError: a NaN/inf under nonfinite_policy="halt".
    Preempted: SIGTERM arrived; a checkpoint was saved first.
    DiskFullError: the disk filled up; the last good checkpoint is intact.
  """
  # ---------------------------------------------------------- set up.
  config, spec = preflight.resolve(config_lib.validate(config))
  parallel.maybe_initialize_distributed()
  lead = jax.process_index() == 0
  _num_devices(config)  # a config error: before the workdir is looked at
  created = not os.path.exists(workdir)
  workdir_lib.check_writable(workdir)
  lock = ckpt_lib.WorkdirLock(workdir) if lead else None
  if lock:
    lock.__enter__()
  try:
    if lead:
      try:
        workdir_lib.check_owner(workdir, config)
      except config_lib.ConfigError:
        if not overwrite:
          raise
        aside = workdir_lib.move_aside(workdir, keep=(".lock",))
        log.warning("--overwrite: the old contents of %s were moved to %s",
                    workdir, aside)
    return _train(config, workdir, condition or {}, lead, spec)
  except Exception as e:  # noqa: BLE001 — re-raised, as DiskFullError if so
    if isinstance(e, workdir_lib.DiskFullError) or not (
        workdir_lib.is_disk_full(e)):
      raise
    steps = workdir_lib.saved_steps(workdir)
    kept = (f"the last good checkpoint (step {steps[-1]}) is intact"
            if steps else "no checkpoint had been saved yet")
    raise workdir_lib.DiskFullError(
        errno.ENOSPC, f"the disk holding workdir {workdir} is full; {kept}. "
        "Free some space and run the same command again to resume") from None
  finally:
    if lead:
      # While the lock is held: a process that starts now is refused, not
      # left holding a lock file that we delete.
      workdir_lib.remove_if_only_lock(workdir, created)
    if lock:
      lock.__exit__(None, None, None)


def _num_devices(config) -> int:
  """The mesh size; raises ConfigError if the devices cannot hold the batch."""
  ndev = config.num_devices or jax.device_count()
  if ndev > jax.device_count():
    raise config_lib.ConfigError(
        f"config.num_devices={ndev} but only {jax.device_count()} devices exist")
  if config.train.batch_size % ndev:
    raise config_lib.ConfigError(
        f"config.train.batch_size={config.train.batch_size} is not divisible "
        f"by the {ndev} devices of the mesh")
  return ndev


def _train(config, workdir, condition, lead, spec):
  tc = config.train
  # ---------------------------------------------------------- mesh.
  mesh = parallel.make_mesh(_num_devices(config))

  # ---------------------------------------------------------- data.
  data_dir = config.data.data_dir or None
  split_sizes = tuple(config.data.split_sizes) or None
  controls = preflight.label_controls(config, spec)
  seeds = [config.seed + i for i in range(config.num_seeds)]
  tfds_options = config_lib.tfds_options(config)
  pipeline = data_lib.TrainPipeline(
      config.data.name, seeds=seeds, global_batch_size=tc.batch_size,
      data_dir=data_dir, split_sizes=split_sizes,
      train_examples=None if config.data.train_examples < 0
      else config.data.train_examples,
      process_index=jax.process_index(), process_count=jax.process_count(),
      tfds_options=tfds_options, in_memory=config.data.in_memory, **controls)
  cap = None if config.data.eval_examples < 0 else config.data.eval_examples
  splits = {}
  for split in ("validation", "test"):
    ev = data_lib.eval_split(
        config.data.name, split, data_dir=data_dir, split_sizes=split_sizes,
        num_examples=cap, tfds_options=tfds_options,
        in_memory=config.data.in_memory)
    splits[split] = (ev, ev.labels, ev.mask)

  # ---------------------------------------------------------- programs.
  task_names = list(pipeline.task_names)
  tasks = pipeline.tasks
  tx = step_lib.make_optimizer(config.optimizer, tc.steps)
  programs = [_Program(p, config, pipeline, seeds, mesh, tx)
              for p in runs_lib.build_programs(config, pipeline.image_shape,
                                               len(task_names), tasks)]
  evaluators = {
      split: [evaluate.Evaluator(p.eval_fn, *arrs, tasks, mesh)
              for p in programs] for split, arrs in splits.items()}

  # ---------------------------------------------------------- restore.
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                               keep=tc.keep_checkpoints,
                               fingerprint=fingerprint(config),
                               config=computational_fields(config))
  abstract = {p.prog.name: p.abstract_state() for p in programs}
  restored, meta = ckpt.restore_latest(abstract)
  start = 0
  # Skipped (non-finite) updates per run, [S, G] per program: in the
  # checkpoint's JSON item so that a resumed run keeps counting.
  skipped = {p.prog.name: np.zeros(p.specs["seed"].shape, np.int64)
             for p in programs}
  if restored is not None:
    for p in programs:
      p.state = restored[p.prog.name]
      counts = meta.get("nonfinite_skipped", {}).get(p.prog.name)
      if counts is not None:
        skipped[p.prog.name] = np.asarray(counts, np.int64)
      if p.affinity is not None:
        p.affinity.load_json(meta["affinity"][p.prog.name])
    start = int(meta["step"])
    log.info("resuming %s from step %d", workdir, start)
  out = writers.Writers(workdir, enabled=lead, start_step=start,
                        progress=tc.progress, total=tc.steps)
  if lead:
    writers.write_json(os.path.join(workdir, "config.json"),
                       config_lib.to_dict(config))
    writers.write_json(os.path.join(workdir, "env.json"), writers.environment())

  # ---------------------------------------------------------- train loop.
  preempted = []
  old_handler = None
  if hasattr(signal, "SIGTERM") and _main_thread():
    old_handler = signal.signal(signal.SIGTERM,
                                lambda *_: preempted.append(True))

  def save(step):
    # Once per step: a SIGTERM during the step before a periodic checkpoint
    # finds that step already saved (and orbax refuses to save it twice).
    if step in ckpt.steps():
      return
    ckpt.save(step, {p.prog.name: p.state for p in programs},
              {"task_names": task_names,
               "nonfinite_skipped": {k: v.tolist()
                                     for k, v in skipped.items()},
               "affinity": {p.prog.name: p.affinity.to_json()
                            for p in programs if p.affinity is not None}})

  pending: list[tuple[int, list[dict]]] = []

  def drain():
    """Fetches pending metrics, halts or counts non-finite steps."""
    fetched = jax.device_get(pending)
    pending.clear()
    n = 0
    for s_i, ms in fetched:
      for p, m in zip(programs, ms):
        bad = np.asarray(m["nonfinite"]) > 0
        if bad.any():
          if tc.nonfinite_policy == "halt":
            raise NonFiniteError(_nonfinite_message(
                s_i + 1, p, m, task_names, ckpt.steps()))
          skipped[p.prog.name] += bad
          n += int(bad.sum())
    return fetched, n

  try:
    batches = pipeline.batches(start)
    t_last, n_last = time.perf_counter(), start
    for step in range(start, tc.steps):
      if preempted:
        drain()  # the skipped counts saved must include the pending steps
        save(step)
        raise Preempted(f"SIGTERM at step {step}: checkpoint saved; run the "
                        "same command again to resume")
      batch = parallel.global_batch(next(batches), mesh)
      step_metrics = []
      for p in programs:
        if p.affinity is not None:
          p.affinity.measure(step, p.state, p.specs, batch)
        p.state, m = p.step_fn(p.state, p.specs, batch)
        step_metrics.append(m)
      pending.append((step, step_metrics))
      done = step + 1
      is_eval = done % tc.eval_every == 0 or done == tc.steps
      is_ckpt = done % tc.checkpoint_every == 0 or done == tc.steps
      if done % tc.log_every == 0 or is_eval or is_ckpt:
        # The only host sync in the loop: metrics stay on device until here.
        fetched, n_skipped = drain()
        now = time.perf_counter()
        rate = (done - n_last) / max(now - t_last, 1e-9)
        t_last, n_last = now, done
        last = fetched[-1][1]
        record = {"step": done, "kind": "train", "steps_per_sec": rate,
                  "nonfinite_skipped": n_skipped, "arms": {}}
        for p, m in zip(programs, last):
          record["arms"].update(_arm_means(p, m))
        out.log(record)
      if is_eval:
        record = {"step": done, "kind": "validation",
                  "metric": tc.selection_metric, "arms": {}}
        for p, ev in zip(programs, evaluators["validation"]):
          per_run = ev.metrics(p.state.params, p.state.model_state)
          scores = evaluate.selection_scores(per_run, p.task_masks,
                                             tc.selection_metric, tasks)
          p.state = p.update_best(p.state, jax.device_put(
              scores.astype(np.float32), p.rep), jnp.int32(done))
          record["arms"].update(results_lib.val_arm_means(
              p, per_run, tc.selection_metric, tasks))
          for arm, v in results_lib.val_per_task(
              p, per_run, seeds, tc.selection_metric, tasks).items():
            record.setdefault("per_task", {}).setdefault(arm, {}).update(v)
        out.log(record)
      if is_ckpt:
        save(done)
      out.progress(done)
  except BaseException:
    # Halt, preemption, a full disk: release orbax's manager (its threads and
    # files) for an in-process caller such as a notebook, then re-raise.
    ckpt.close()
    raise
  finally:
    if old_handler is not None:
      signal.signal(signal.SIGTERM, old_handler)
    out.close()

  # ---------------------------------------------------------- results.
  results = {
      "schema_version": results_lib.SCHEMA_VERSION, "experiment": config.name,
      "condition": condition,
      "dataset": {"name": config.data.name, "task_names": task_names,
                  "tasks": [t.to_json() for t in tasks]},
      "selection_metric": tc.selection_metric,
      "config": config_lib.to_dict(config), "env": writers.environment(),
      "runs": []}
  for i, p in enumerate(programs):
    best = (p.state.best_params, p.state.best_model_state)
    val = evaluators["validation"][i].metrics(*best)
    test = evaluators["test"][i].metrics(*best)
    best_step = np.asarray(p.state.best_step)
    finite = np.isfinite(np.asarray(p.state.best_score))
    results["runs"].extend(results_lib.run_entries(
        p, seeds, val, test, best_step, task_names, skipped[p.prog.name],
        finite, tc, tasks,
        p.affinity.means() if p.affinity is not None else None))
  for r in results["runs"]:
    for w in r["warnings"]:
      log.warning("arm %s, seed %d, learning rate %g: %s", r["arm"], r["seed"],
                  r["learning_rate"], w)
  if lead:
    writers.write_json(os.path.join(workdir, "results.json"), results)
  ckpt.close()
  return results


def _main_thread() -> bool:
  import threading  # pylint: disable=g-import-not-at-top
  return threading.current_thread() is threading.main_thread()
