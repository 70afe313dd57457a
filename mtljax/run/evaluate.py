"""Evaluation of every stacked run on a fully labelled split.

    ev = Evaluator(eval_fn, images, labels, mask, tasks, mesh)
    logits = ev.logits(params, model_state)     # numpy [S, G, N, O]
    per_run = ev.metrics(params, model_state)   # [S][G] task_metrics dicts
    scores = selection_scores(per_run, task_masks, "auc", tasks)  # [S, G]

`images` is a float32 array or an `EvalSplit` (data.pipeline) that reads
normalised chunks on demand, so a large split is never held as float32.
Logits are computed on device in fixed-size chunks (bounded memory, one
compilation) and pulled to the host once per evaluation; the metrics are
exact numpy, each task in its own type's metrics (see typed_metrics.py).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from mtljax.tasks import typed_metrics as typed_metrics_lib
from mtljax.tasks import types as types_lib
from mtljax.core import parallel


def as_tasks(tasks) -> tuple:
  """Tasks, or task names (then every task is binary)."""
  return tuple(types_lib.Task(t) if isinstance(t, str) else t for t in tasks)


class Evaluator:
  """Evaluates stacked [S, G] params (with their model state) on one split."""

  def __init__(self, eval_fn: Callable, images, labels: np.ndarray,
               mask: np.ndarray, tasks: Sequence, mesh: Mesh,
               chunk: int = 1024):
    """Args:
      eval_fn: step.make_eval_fn's jitted `(params, model_state, images)
        -> [S, G, n, O]`.
      images: float32 [N, H, W, C], or an object with `len()` and
        `images(start, stop)` returning normalised float32 chunks.
      labels: [N, T] (0/1, class index or value).
      mask: bool [N, T].
      tasks: the T `mtljax.tasks.Task`s (or names: all binary).
      mesh: the device mesh (chunks are split over its "data" axis).
      chunk: examples per device call; rounded up to a multiple of the
        number of devices so every chunk shards evenly.
    """
    ndev = mesh.devices.size
    self.chunk = -(-min(chunk, len(images)) // ndev) * ndev
    self.eval_fn, self.mesh = eval_fn, mesh
    self.images, self.labels, self.mask = images, labels, mask
    self.tasks = as_tasks(tasks)
    self.task_names = [t.name for t in self.tasks]
    self._sharding = parallel.batch_sharding(mesh, example_axis=0)

  def logits(self, params, model_state) -> np.ndarray:
    """[S, G, N, T] logits of stacked params and model state (TrainState's
    params and model_state, or best_params and best_model_state)."""
    n = len(self.images)
    read = getattr(self.images, "images", None) or (
        lambda a, b: self.images[a:b])
    out = []
    for start in range(0, n, self.chunk):
      x = read(start, min(n, start + self.chunk))
      k = len(x)
      if k < self.chunk:  # pad the tail: one shape, one compilation
        x = np.concatenate([x, np.zeros((self.chunk - k,) + x.shape[1:],
                                        x.dtype)])
      y = self.eval_fn(params, model_state,
                       jax.device_put(x, self._sharding))
      out.append(np.asarray(y)[:, :, :k])
    return np.concatenate(out, axis=2)

  def metrics(self, params, model_state) -> list[list[dict]]:
    """task_metrics of every run: a [S][G] nested list of dicts."""
    logits = self.logits(params, model_state)
    s, g = logits.shape[:2]
    flat = typed_metrics_lib.typed_metrics_batched(
        logits.reshape((s * g,) + logits.shape[2:]), self.labels, self.mask,
        self.tasks)
    return [flat[i * g:(i + 1) * g] for i in range(s)]


def selection_masks(task_masks: np.ndarray, selection_tasks=()) -> np.ndarray:
  """[G, T]: the tasks each run is selected by (config.train.selection_tasks).

  A run's own tasks that are selection tasks; all its own tasks when there
  are none (no selection tasks given, or a network, such as an auxiliary
  task's STL network, that learns none of them).
  """
  masks = np.asarray(task_masks) > 0
  if not len(selection_tasks):
    return masks
  sel = np.zeros(masks.shape[1], bool)
  sel[list(selection_tasks)] = True
  both = masks & sel[None, :]
  return np.where(both.any(axis=1, keepdims=True), both, masks)


def selection_scores(per_run: list[list[dict]], task_masks: np.ndarray,
                     metric: str, tasks=None) -> np.ndarray:
  """Each run's model-selection score: higher is better.

  Args:
    per_run: [S][G] task_metrics dicts.
    task_masks: [G, T] group masks.
    metric: a metric every task of the runs' groups has ("auc", "r2", ...),
      or "primary": each task's own primary metric (AUC, accuracy, R²; all
      higher-is-better), the documented scalar over mixed task types.
    tasks: the T Tasks (None: all binary), for each metric's direction.

  Returns:
    float64 [S, G]: mean of `metric` over the run's own tasks (negated where
    lower is better); -inf where undefined, so such a run is never selected.
  """
  names = list(per_run[0][0]["per_task"])
  tasks = as_tasks(tasks if tasks is not None else names)
  out = np.full((len(per_run), len(per_run[0])), -np.inf)
  for s, runs in enumerate(per_run):
    for g, m in enumerate(runs):
      vals = []
      for t in np.flatnonzero(task_masks[g]):
        name = (tasks[t].primary_metric if metric == types_lib.PRIMARY
                else metric)
        sign = 1.0 if tasks[t].higher_is_better(name) else -1.0
        vals.append(sign * m["per_task"][names[t]][name])
      vals = [v for v in vals if np.isfinite(v)]
      if vals:
        out[s, g] = float(np.mean(vals))
  return out
