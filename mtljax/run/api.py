"""The Python API, re-exported from `mtljax`: train, load a model, report.

    import mtljax
    results = mtljax.train_and_evaluate(config, "/tmp/w")
    model = mtljax.load_model("/tmp/w", arm="stl", seed=0)
    probs = model.predict(images)          # {task name: [N] probabilities}
    summary = mtljax.report(["/tmp/w"], "/tmp/w/report")

`load_model` gives the weights behind results.json: each run's best
parameters by validation, restored from the workdir's last checkpoint, at
the learning rate(s) that the report chooses. For an STL arm, task t's
predictions come from the single-task network trained on task t.

This module imports jax only inside its functions: `train_and_evaluate`
first sets up the process as the `mtljax` command does (session.prepare),
and tuning the host allocator must happen before jax is imported.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np

from mtljax import errors
from mtljax.run import session
from mtljax.tasks import types as task_types

ConfigError = errors.ConfigError
CheckpointError = errors.CheckpointError


# ------------------------------------------------------------------ train.
def train_and_evaluate(config, workdir, condition: dict | None = None,
                       **kwargs) -> dict:
  """Trains every run of `config` into `workdir`; returns the results dict.

  `mtljax.run.train.train_and_evaluate` with the set-up of the `mtljax`
  command: progress lines are shown (a log handler is added only if the
  program has configured no logging), the host allocator is tuned if jax is
  not imported yet, and compiled programs are cached across processes
  ($MTLJAX_COMPILATION_CACHE; "" disables the cache).

  Args:
    config: an experiment config, e.g. from `mtljax.default_config()`.
    workdir: output directory; an unfinished run of the same config in it is
      resumed, and a workdir made by another config is refused.
    condition: the sweep fields that define this run (recorded in results).
    **kwargs: passed on, e.g. `overwrite=True` (move a workdir made by
      another config aside to `<workdir>.old` and start afresh).

  Returns:
    The results dict, also written to workdir/results.json (schema in
    README.md).

  Raises:
    ConfigError, DataError, CheckpointError, NonFiniteError, Preempted,
    DiskFullError: as `mtljax.run.train.train_and_evaluate`.
  """
  session.prepare()
  from mtljax.run import train  # pylint: disable=g-import-not-at-top
  return train.train_and_evaluate(config, os.fspath(workdir), condition,
                                  **kwargs)


# ----------------------------------------------------------------- report.
def report(workdirs, out_dir, **kwargs) -> dict:
  """Writes report.md, report.json and plots of finished workdirs or sweeps.

  Args:
    workdirs: a workdir, a sweep directory or a results.json path, or a list
      of them.
    out_dir: where the report goes (created if needed).
    **kwargs: passed on to `mtljax.analysis.report.write_report`: `metric`
      ("auc", "ap", "acc", "loss"), `baseline` (the arm the others are
      compared with; one given must be present in the runs), `title`.

  Returns:
    The summary (see `mtljax.analysis.report.summarize`), with "plots".

  Raises:
    ReportError: no results.json, a corrupt one, the same run twice, an
      absent `baseline`, or an unwritable `out_dir`.
  """
  from mtljax.analysis import report as report_lib  # pylint: disable=g-import-not-at-top
  if isinstance(workdirs, (str, os.PathLike)):
    workdirs = [workdirs]
  results = report_lib.load_results([os.fspath(w) for w in workdirs])
  if kwargs.get("baseline") is None:
    kwargs.pop("baseline", None)  # the default, which may simply not apply
  else:
    report_lib.check_baseline(results, kwargs["baseline"])
  return report_lib.write_report(results, os.fspath(out_dir), **kwargs)


# ------------------------------------------------------------- the model.
class Model:
  """One arm's best-by-validation networks for one seed, for prediction.

  Attributes:
    workdir: where it was loaded from.
    arm: the results arm ("mtl", "stl", ...).
    mode: the arm's mode in results.json: "mtl" (one network for all tasks)
      or "stl" (one network per task).
    seed: the seed of its runs.
    task_names: the tasks it predicts (an STL arm restricted by
      config.stl_tasks predicts only those).
    learning_rates: {task: the learning rate of the network predicting it}.
    best_step: {task: the step whose weights it uses}.
    image_shape: (H, W, C) that `predict` expects.
    step: the training step of the checkpoint restored.
  """

  def __init__(self, *, workdir, arm, mode, seed, task_names, learning_rates,
               best_step, image_shape, step, eval_fn, inputs, mesh, columns,
               tasks=None):
    self.workdir = workdir
    self.arm = arm
    self.mode = mode
    self.seed = seed
    self.task_names = list(task_names)
    self.learning_rates = dict(learning_rates)
    self.best_step = dict(best_step)
    self.image_shape = tuple(image_shape)
    self.step = step
    self._eval_fn = eval_fn
    self._inputs = inputs      # (params[, model_state]): [1, K, ...] each
    self._mesh = mesh
    self._columns = columns    # task -> (network k, its output columns)
    # task name -> Task (its type says how outputs become predictions).
    self.tasks = dict(tasks or {n: task_types.Task(n) for n in task_names})

  def __repr__(self) -> str:
    return (f"Model(arm={self.arm!r}, seed={self.seed}, "
            f"tasks={self.task_names}, learning_rates={self.learning_rates})")

  def logits(self, images) -> dict[str, np.ndarray]:
    """Each task's outputs: {task name: float32 [N] (binary: the logit;
    regression: the prediction) or [N, K] (a K-way task's logits)}."""
    x = self._images(images)
    if not len(x):
      return {t: np.zeros((0,) if self.tasks[t].num_outputs == 1 else (
          0, self.tasks[t].num_outputs), np.float32) for t in self.task_names}
    from mtljax.run import evaluate  # pylint: disable=g-import-not-at-top
    # The evaluator's own chunking, padding and sharding, so that the logits
    # are those the results were computed from (it needs no labels for that).
    out = evaluate.Evaluator(self._eval_fn, x, None, None,
                             list(self.tasks.values()),
                             self._mesh).logits(*self._inputs)  # [1, K, N, O]
    out = {task: out[0, k, :, cols] for task, (k, cols) in
           self._columns.items()}
    return {task: v if self.tasks[task].type == "multiclass" else v[:, 0]
            for task, v in out.items()}

  def predict(self, images) -> dict[str, np.ndarray]:
    """Each task's prediction: a binary task's probability (the sigmoid of
    its logit), a K-way task's class probabilities [N, K] (the softmax), a
    regression task's value.

    Args:
      images: [N, H, W, C] (H, W, C = `image_shape`): uint8 images as stored
        by the dataset (normalised here with `mtljax.data.normalize`), or
        float images already normalised that way (x / 255 - 0.5).

    Returns:
      {task name: float64 [N] probabilities (binary), [N, K] probabilities
      (multiclass) or [N] values (regression)}. The sigmoid is taken in
      float64 so that it keeps every distinction between the float32 logits:
      their ranking, hence AUC, is preserved exactly.

    Raises:
      ValueError: images of another shape, dtype or (for floats) range.
    """
    out = {}
    for task, v in self.logits(images).items():
      v = v.astype(np.float64)
      kind = self.tasks[task].type
      if kind == "binary":
        out[task] = 1.0 / (1.0 + np.exp(-v))
      elif kind == "multiclass":
        e = np.exp(v - v.max(axis=-1, keepdims=True))
        out[task] = e / e.sum(axis=-1, keepdims=True)
      else:
        out[task] = v
    return out

  def _images(self, images) -> np.ndarray:
    x = np.asarray(images)
    want = "[N, " + ", ".join(map(str, self.image_shape)) + "]"
    if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
      hint = (" (one image: pass images[None])"
              if tuple(x.shape) == self.image_shape else "")
      raise ValueError(f"images must have shape {want}; got "
                       f"{list(x.shape)}{hint}")
    if x.dtype == np.uint8:
      from mtljax import data  # pylint: disable=g-import-not-at-top
      return data.normalize(x)
    if not np.issubdtype(x.dtype, np.floating):
      raise ValueError(f"images must be uint8 or normalised floats; got dtype "
                       f"{x.dtype}")
    x = x.astype(np.float32)
    # 0..255 floats would silently give garbage: the one mistake that can be
    # recognised from the values.
    if x.size and float(np.nanmax(x)) > 1.0:
      raise ValueError(
          "float images are taken as normalised (x / 255 - 0.5, in [-0.5, "
          f"0.5]) but these reach {float(np.nanmax(x)):g}; pass the uint8 "
          "images, or mtljax.data.normalize(images)")
    return x


def load_model(workdir, arm: str = "mtl", seed: int = 0,
               learning_rate: float | None = None) -> Model:
  """The best-by-validation weights of one arm and seed of a finished run.

  Args:
    workdir: a workdir with results.json, config.json and checkpoints/. An
      experiment with its own registered components (an encoder) must have
      been imported first, so that the network can be rebuilt.
    arm: a results arm, e.g. "mtl", "stl", "stl_matched", "mtl_negative".
    seed: one of the seeds trained.
    learning_rate: one of the rates trained; None picks the report's choice:
      the rate with the best validation selection metric averaged over
      seeds and over the tasks of each network: one rate for an MTL arm,
      one per task for an STL arm (whose tasks may then come from networks
      of different rates).

  Returns:
    A Model; `model.predict(images)` gives {task name: [N] probabilities}.

  Raises:
    ConfigError: no such workdir, no results.json or config.json in it (has
      training finished?), or an arm, seed or learning rate it does not hold
      (the message lists those it does).
    CheckpointError: no checkpoint, or none that can be restored.
  """
  workdir = os.fspath(workdir)
  results, cfg_dict = _read_workdir(workdir)
  runs = _arm_runs(results, arm, workdir)
  seeds = sorted({r["seed"] for r in runs})
  if seed not in seeds:
    raise ConfigError(f"arm {arm!r} of {workdir} has no seed {seed!r}; its "
                      f"seeds: {', '.join(map(str, seeds))}")
  names = list(results["dataset"]["task_names"])
  tasks = [t for t in names if t in runs[0]["test"]["per_task"]]
  rates = _rates(results, runs, tasks, learning_rate, arm, workdir)
  entries = {lr: next(r for r in runs if r["seed"] == seed
                      and r["learning_rate"] == lr)
             for lr in set(rates.values())}
  # best_step lists the networks in the order of per_task (STL: the order of
  # config.stl_tasks), not of the dataset's tasks.
  best_step = {t: int(entries[rates[t]]["best_step"][
      list(entries[rates[t]]["test"]["per_task"]).index(t)]) for t in tasks}
  session.prepare()
  return _restore(workdir, cfg_dict, arm=arm, mode=runs[0]["mode"], seed=seed,
                  rates=rates, names=names, best_step=best_step)


def _read_json(path: str, what: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise ConfigError(f"{path} does not exist: {what}") from None
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path} cannot be read ({type(e).__name__}: {e})"
                      ) from None


def _read_workdir(workdir: str) -> tuple[dict, dict]:
  if not os.path.isdir(workdir):
    raise ConfigError(f"workdir {workdir} does not exist")
  results = _read_json(os.path.join(workdir, "results.json"),
                       "no finished training in this workdir (results.json "
                       "is written at the end)")
  cfg = _read_json(os.path.join(workdir, "config.json"),
                   "it records the config that trained this workdir")
  if not (isinstance(results, dict) and isinstance(results.get("runs"), list)
          and results["runs"] and isinstance(cfg, dict)):
    raise ConfigError(f"{workdir}: results.json or config.json is not an "
                      "mtljax workdir's")
  return results, cfg


def _arm_runs(results: dict, arm: str, workdir: str) -> list[dict]:
  runs = [r for r in results["runs"] if r["arm"] == arm]
  if not runs:
    arms = dict.fromkeys(r["arm"] for r in results["runs"])
    raise ConfigError(f"{workdir} has no arm {arm!r}; its arms: "
                      f"{', '.join(arms)}")
  return runs


def _rates(results, runs, tasks, learning_rate, arm, workdir
           ) -> dict[str, float]:
  """{task: learning rate of the network that predicts it}."""
  grid = sorted({r["learning_rate"] for r in runs})
  if learning_rate is not None:
    match = [lr for lr in grid if math.isclose(lr, learning_rate,
                                               rel_tol=1e-9)]
    if not match:
      raise ConfigError(f"arm {arm!r} of {workdir} was not trained with "
                        f"learning rate {learning_rate!r}; its rates: "
                        f"{', '.join(f'{lr:g}' for lr in grid)}")
    return {t: match[0] for t in tasks}
  from mtljax.analysis import report as report_lib  # pylint: disable=g-import-not-at-top
  # The report's own choice (over every seed of the arm; per network), so
  # that a loaded model is the one whose test metrics the report shows.
  summary = report_lib.summarize([results])
  chosen = summary["conditions"][0]["arms"][arm]["lr"]["chosen"]
  return {t: chosen[t] for t in tasks}


_MISSING = object()


def _field(state, name: str, default=_MISSING):
  """A train-state field, whether the state is a dict or a dataclass."""
  if isinstance(state, Mapping):
    found = state.get(name, _MISSING)
  else:
    found = getattr(state, name, _MISSING)
  if found is _MISSING:
    if default is _MISSING:
      raise KeyError(f"the train state has no field {name!r}")
    return default
  return found


def _networks(programs, arm, rates, names):
  """The program and networks that predict each task.

  Returns:
    (program, [group index of each network used], {task: (network k, logit
    column t)}), or None if no program has them all.
  """
  for prog in programs:
    groups, cols, columns = prog.prog.groups, [], {}
    for task, lr in rates.items():
      t = list(names).index(task)
      # The arm's network at that rate whose task group holds t: MTL's one
      # network, STL's network of t (a partition's group of t).
      g = next((i for i, gr in enumerate(groups) if gr.arm == arm
                and gr.learning_rate == lr and t in gr.tasks), None)
      if g is None:
        break
      if g not in cols:
        cols.append(g)
      columns[task] = (cols.index(g), t)
    else:
      return prog, cols, columns
  return None


def _config_from_json(cfg_dict: dict, workdir: str):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from mtljax import config as config_lib  # pylint: disable=g-import-not-at-top
  # validate() turns JSON's lists back into tuples and fills in fields that
  # postdate the workdir with their defaults, as the training run saw them.
  model = dict(cfg_dict.get("model", {}))
  if "pool" in model:  # before model.encoder_kwargs (workdirs of older mtljax)
    pool = model.pop("pool")
    if model.get("encoder", "cnn") == "cnn" and pool != "max":
      model["encoder_kwargs"] = {**model.get("encoder_kwargs", {}),
                                 "pool": pool}
    cfg_dict = {**cfg_dict, "model": model}
  try:
    return config_lib.validate(ml_collections.ConfigDict(cfg_dict))
  except ConfigError as e:
    raise ConfigError(
        f"{os.path.join(workdir, 'config.json')}: {e}. A component of your "
        "own (an encoder) must be registered, by importing its module or "
        "experiment file, before load_model") from None


def _restore(workdir: str, cfg_dict: dict, *, arm: str, mode: str, seed: int,
             rates: dict[str, float], names: Sequence[str],
             best_step: dict[str, int]) -> Model:
  """Rebuilds the training state's structure and restores the checkpoint."""
  # pylint: disable=g-import-not-at-top
  import jax
  from mtljax.core import parallel
  from mtljax.core import runs as runs_lib
  from mtljax.core import step as step_lib
  from mtljax.run import checkpoint as ckpt_lib
  from mtljax.run import preflight
  from mtljax.run import train
  # pylint: enable=g-import-not-at-top
  config = _config_from_json(cfg_dict, workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):  # before orbax, which would create it
    raise CheckpointError(f"{workdir} has no checkpoints/ directory: the "
                          "trained weights are not there")
  spec = preflight.dataset_spec(config)
  seeds = [config.seed + i for i in range(config.num_seeds)]
  # Training's mesh where this process has as many devices: evaluation splits
  # the examples over it, and the same split gives the very logits that the
  # results were computed from.
  ndev = min(config.num_devices or jax.device_count(), jax.device_count())
  mesh = parallel.make_mesh(ndev)
  tx = step_lib.make_optimizer(config.optimizer, config.train.steps)
  # Every program, as training built it: the checkpoint holds all of them,
  # and _Program is the one definition of their state's structure.
  programs = [train._Program(p, config, spec, seeds, mesh, tx)  # pylint: disable=protected-access
              for p in runs_lib.build_programs(config, spec.image_shape,
                                               len(spec.task_names),
                                               spec.tasks)]
  ckpt = ckpt_lib.Checkpointer(ckpt_dir, keep=config.train.keep_checkpoints,
                               fingerprint=train.fingerprint(config),
                               config=train.computational_fields(config))
  try:
    restored, meta = ckpt.restore_latest(
        {p.prog.name: p.abstract_state() for p in programs})
  finally:
    ckpt.close()
  if restored is None:
    raise CheckpointError(f"{ckpt_dir} holds no checkpoint")

  found = _networks(programs, arm, rates, names)
  if found is None:
    raise CheckpointError(f"no network of arm {arm!r} in {workdir}'s config "
                          "matches its results.json")
  prog, cols, columns = found
  state, s = restored[prog.prog.name], seeds.index(seed)
  # The evaluator's inputs: best_params, and best_model_state (BatchNorm's
  # statistics) where the train state has one; [1, K, ...]: the K networks.
  inputs = [_field(state, "best_params")]
  model_state = _field(state, "best_model_state", None)
  if model_state is not None:
    inputs.append(model_state)
  inputs = jax.device_put(
      jax.tree.map(lambda x: np.asarray(x)[s][np.asarray(cols)][None],
                   tuple(inputs)), parallel.replicated(mesh))
  offsets = task_types.output_offsets(spec.tasks)
  by_name = {t.name: t for t in spec.tasks}
  # Task t's outputs are the columns offsets[t]:offsets[t + 1].
  columns = {task: (k, slice(int(offsets[t]), int(offsets[t + 1])))
             for task, (k, t) in columns.items()}
  return Model(workdir=workdir, arm=arm, mode=mode, seed=seed,
               task_names=list(rates), learning_rates=rates,
               best_step=best_step, image_shape=spec.image_shape,
               step=int(meta["step"]), eval_fn=prog.eval_fn, inputs=inputs,
               mesh=mesh, columns=columns,
               tasks={n: by_name[n] for n in rates})
