"""Evaluation of every stacked run on a fully labelled split.

    ev = Evaluator(eval_fn, images, labels, mask, task_names, mesh)
    logits = ev.logits(params, model_state)     # numpy [S, G, N, T]
    per_run = ev.metrics(params, model_state)   # [S][G] task_metrics dicts
    scores = selection_scores(per_run, task_masks, "auc")   # [S, G], higher=better

Logits are computed on device in fixed-size chunks (bounded memory, one
compilation) and pulled to the host once per evaluation; the metrics are
exact numpy (see metrics.py).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from mtljax.tasks import metrics as metrics_lib
from mtljax.core import parallel


class Evaluator:
  """Evaluates stacked [S, G] params (with their model state) on one split."""

  def __init__(self, eval_fn: Callable, images: np.ndarray, labels: np.ndarray,
               mask: np.ndarray, task_names: Sequence[str], mesh: Mesh,
               chunk: int = 1024):
    """Args:
      eval_fn: step.make_eval_fn's jitted `(params, model_state, images)
        -> [S, G, n, T]`.
      images: float32 [N, H, W, C].
      labels: [N, T] in {0, 1}.
      mask: bool [N, T].
      task_names: T names.
      mesh: the device mesh (chunks are split over its "data" axis).
      chunk: examples per device call; rounded up to a multiple of the
        number of devices so every chunk shards evenly.
    """
    ndev = mesh.devices.size
    self.chunk = -(-min(chunk, len(images)) // ndev) * ndev
    self.eval_fn, self.mesh = eval_fn, mesh
    self.images, self.labels, self.mask = images, labels, mask
    self.task_names = list(task_names)
    self._sharding = parallel.batch_sharding(mesh, example_axis=0)

  def logits(self, params, model_state) -> np.ndarray:
    """[S, G, N, T] logits of stacked params and model state (TrainState's
    params and model_state, or best_params and best_model_state)."""
    n = len(self.images)
    out = []
    for start in range(0, n, self.chunk):
      x = self.images[start:start + self.chunk]
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
    flat = metrics_lib.task_metrics_batched(
        logits.reshape((s * g,) + logits.shape[2:]), self.labels, self.mask,
        self.task_names)
    return [flat[i * g:(i + 1) * g] for i in range(s)]


def selection_scores(per_run: list[list[dict]], task_masks: np.ndarray,
                     metric: str) -> np.ndarray:
  """Each run's model-selection score: higher is better.

  Args:
    per_run: [S][G] task_metrics dicts.
    task_masks: [G, T] group masks.
    metric: "auc", "ap", "acc" or "loss".

  Returns:
    float64 [S, G]: mean of `metric` over the run's own tasks (negated for
    loss); -inf where undefined, so such a run is never selected.
  """
  names = None
  sign = 1.0 if metrics_lib.HIGHER_IS_BETTER[metric] else -1.0
  out = np.full((len(per_run), len(per_run[0])), -np.inf)
  for s, runs in enumerate(per_run):
    for g, m in enumerate(runs):
      names = names or list(m["per_task"])
      vals = [m["per_task"][names[t]][metric]
              for t in np.flatnonzero(task_masks[g])]
      vals = [v for v in vals if np.isfinite(v)]
      if vals:
        out[s, g] = sign * float(np.mean(vals))
  return out
