"""Share the first k encoder stages; the rest are one copy per task.

    cfg.model.arch = "share_k"
    cfg.model.arch_kwargs.shared_stages = 1     # k, 0 ≤ k ≤ depth

k = depth is hard parameter sharing ("hps", and initialised identically);
k = 0 is T independent single-task networks side by side. In between, the
point where the tasks' networks branch is the knob (the "where to branch"
question of Vandenhende et al. 2019's branched networks, at stage
granularity).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from mtljax import registry
from mtljax.models import parts


class ShareK(nnx.Module):
  """Encoder stages [0, k) shared, stages [k, depth) per task, then heads.

  A stage is a layer of the MLP encoder or a conv stage of the CNN (any
  encoder with staged access: `stage`, `finish`, `keep_stages`). The
  per-task stages are T copies of the encoder's stages [k, depth), stacked
  on a leading task axis; task t's copy feeds only task t's head.
  """

  output_params = parts.OUTPUT_PARAMS

  def __init__(self, *, encoder: str, width: int, depth: int, num_tasks: int,
               image_shape, head_hidden: int = 0, dropout: float = 0.0,
               encoder_kwargs: dict | None = None, dtype=jnp.float32,
               outputs_per_task=None, shared_stages: int = 1,
               rngs: nnx.Rngs):
    """Args (besides every architecture's, see MultiTaskNet):
      shared_stages: k, the number of leading stages all tasks share.
    """
    if not 0 <= shared_stages <= depth:
      raise ValueError(f"shared_stages={shared_stages} must be in [0, depth="
                       f"{depth}]")
    make = parts.make_encoder(encoder, image_shape, width=width, depth=depth,
                              dropout=dropout, dtype=dtype,
                              encoder_kwargs=encoder_kwargs)
    self.shared_stages = shared_stages
    self.depth = depth
    self.dtype = dtype
    # k = depth builds exactly MultiTaskNet (same draws, same order).
    self.encoder = make(rngs) if shared_stages > 0 else None
    if 0 < shared_stages < depth:
      parts.require_staged(self.encoder, "share_k")
      self.encoder.keep_stages(0, shared_stages)
    if shared_stages < depth:
      def task_copy(r):
        enc = make(r)
        parts.require_staged(enc, "share_k")
        return enc.keep_stages(shared_stages, depth)
      self.task_stages = parts.stack(task_copy, num_tasks, rngs)
      feat = self.task_stages.out_features
    else:
      self.task_stages = None
      feat = self.encoder.out_features
    parts.init_heads(self, feat, num_tasks, outputs_per_task, head_hidden,
                     rngs)

  @staticmethod
  def task_axis(path: tuple[str, ...]) -> int | None:
    """Axis 0 for the per-task stages and the heads; None for the shared."""
    return 0 if path and path[0] in ("task_stages",) + parts.HEAD_PARAMS \
        else None

  def __call__(self, x, *, rng=None, deterministic=True, stage0=None):
    return self.decode(self.encode(x, rng=rng, deterministic=deterministic,
                                   stage0=stage0),
                       rng=rng, deterministic=deterministic)

  def encode(self, x, *, rng=None, deterministic=True, stage0=None):
    """Images → the output of the k-th shared stage (k = 0: the images).

    k = depth: the encoder's features [B, F], as MultiTaskNet's; otherwise
    the k-th stage's raw output ([B, width] for the MLP, [B, H', W', C']
    for the CNN, before any global pooling). `stage0`, when given, is the
    shared stage 0's output for `x`, computed by the caller (the CPU step's
    fused first stage, core/stem.py; k ≥ 1 only).
    """
    x = x.astype(self.dtype)
    if self.task_stages is None:
      extra = {} if stage0 is None else {"stage0": stage0}
      return self.encoder(x, rng=rng, deterministic=deterministic, **extra)
    if stage0 is not None and self.shared_stages == 0:
      raise ValueError("stage0 needs a shared first stage (shared_stages ≥ 1)")
    for i in range(self.shared_stages):
      x = (stage0 if i == 0 and stage0 is not None else
           self.encoder.stage(i, x, rng=rng, deterministic=deterministic))
    return x

  def decode(self, rep, *, rng=None, deterministic=True):
    """The shared representation → [B, O] float32 logits."""
    if self.task_stages is None:
      return parts.apply_heads(self, rep)

    def one_task(enc, h, key):
      for i in range(self.depth - self.shared_stages):
        h = enc.stage(i, h, rng=key, deterministic=deterministic)
      return enc.finish(h, rng=key, deterministic=deterministic)

    feats = parts.over_copies(one_task, self.task_stages, rep, rng,
                              self.num_tasks, out_axis=1)   # [B, T, F]
    return parts.apply_heads(self, feats)


registry.ARCHITECTURES.register("share_k", ShareK)
