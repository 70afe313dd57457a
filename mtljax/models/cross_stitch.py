"""Cross-stitch networks (Misra et al., CVPR 2016).

    cfg.model.arch = "cross_stitch"

One encoder column per task (a copy of the configured encoder, MLP or CNN),
and between consecutive stages a cross-stitch unit: a learned T x T matrix
α whose row t mixes the columns' stage outputs into column t's next input,
x_t ← Σ_j α[t, j] h_j (one scalar per column pair, as LibMTL's; initialised
to 0.9 on the diagonal and 0.1/(T-1) off it). There are depth - 1 units, as
in LibMTL (none after the last stage, whose output is the task's feature).

Which parameters are a task's own: a column's stages before the last feed,
through the units after them, every task's output, so they are shared (as
is every unit but the last). Only column t's last stage, row t of the last
unit (which makes column t's last input) and task t's head influence task t
alone. So a one-task group (an STL run) is not a single-task network here:
it trains all T columns on its task, and its parameter count says so.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from mtljax import registry
from mtljax.models import parts


class CrossStitch(nnx.Module):
  """T encoder columns, mixed by cross-stitch units between stages.

  Parameters: `columns` (stages [0, depth-1) of the T columns, stacked on
  axis 0) and `units` ([depth-2, T, T]) are shared; `last_stages` (stage
  depth-1 of each column, [T, ...]), `last_unit` ([T, T], row t is task
  t's) and the heads are per task (axis 0).
  """

  output_params = parts.OUTPUT_PARAMS

  def __init__(self, *, encoder: str, width: int, depth: int, num_tasks: int,
               image_shape, head_hidden: int = 0, dropout: float = 0.0,
               encoder_kwargs: dict | None = None, dtype=jnp.float32,
               outputs_per_task=None, rngs: nnx.Rngs):
    make = parts.make_encoder(encoder, image_shape, width=width, depth=depth,
                              dropout=dropout, dtype=dtype,
                              encoder_kwargs=encoder_kwargs)
    self.depth = depth
    self.dtype = dtype

    def stages(start, stop):
      def build(r):
        enc = make(r)
        parts.require_staged(enc, "cross_stitch")
        return enc.keep_stages(start, stop)
      return build

    self.columns = (parts.stack(stages(0, depth - 1), num_tasks, rngs)
                    if depth > 1 else None)
    self.last_stages = parts.stack(stages(depth - 1, depth), num_tasks, rngs)
    self.units = (nnx.Param(parts.mixing_init(num_tasks, (depth - 2,)))
                  if depth > 2 else None)
    self.last_unit = (nnx.Param(parts.mixing_init(num_tasks))
                      if depth > 1 else None)
    parts.init_heads(self, self.last_stages.out_features, num_tasks,
                     outputs_per_task, head_hidden, rngs)

  _TASK_PARAMS = ("last_stages", "last_unit")

  @classmethod
  def task_axis(cls, path: tuple[str, ...]) -> int | None:
    """Axis 0 for the last stages, the last unit's rows and the heads."""
    return 0 if path and path[0] in cls._TASK_PARAMS + parts.HEAD_PARAMS \
        else None

  def _stitch(self, alpha, h):
    """Column t's next input: Σ_j α[t, j] h_j, h [T, B, ...]."""
    # float32 accumulation, back to the compute dtype for the next stage.
    return jnp.einsum("tj,j...->t...", alpha, h.astype(jnp.float32)
                      ).astype(h.dtype)

  @staticmethod
  def _stage_fn(i, deterministic):
    # A closure, not a default argument: nnx.vmap maps every argument.
    return lambda enc, h, k: enc.stage(i, h, rng=k,
                                       deterministic=deterministic)

  def __call__(self, x, *, rng=None, deterministic=True):
    x = x.astype(self.dtype)
    n = self.num_tasks
    h, axis = x, None                  # every column reads the same images
    for i in range(self.depth - 1):
      h = parts.over_copies(self._stage_fn(i, deterministic), self.columns,
                            h, rng, n, x_axis=axis)           # [T, B, ...]
      axis = 0
      alpha = (self.units[...][i] if i < self.depth - 2
               else self.last_unit[...])
      h = self._stitch(alpha, h)

    def last(enc, hh, k):
      hh = enc.stage(0, hh, rng=k, deterministic=deterministic)
      return enc.finish(hh, rng=k, deterministic=deterministic)

    feats = parts.over_copies(last, self.last_stages, h, rng, n, x_axis=axis,
                              out_axis=1)                     # [B, T, F]
    return parts.apply_heads(self, feats)


registry.ARCHITECTURES.register("cross_stitch", CrossStitch)
