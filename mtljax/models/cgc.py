"""Customized Gate Control (CGC; Tang et al., RecSys 2020, PLE's one level).

    cfg.model.arch = "cgc"
    cfg.model.arch_kwargs.num_shared_experts = 2
    cfg.model.arch_kwargs.num_task_experts = 1

As LibMTL's CGC: Es shared experts, and Et experts of each task's own (every
expert a copy of the configured encoder, MLP or CNN); task t's softmax gate,
computed from the flattened input, mixes the shared experts and its own,
and its head reads the mixture. Multi-level PLE is not implemented.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mtljax import registry
from mtljax.models import mmoe, parts


class CGC(nnx.Module):
  """Shared + per-task experts → per-task gates over (shared + own) → heads.

  Parameters: `experts` (the Es shared encoders, stacked on axis 0) are
  shared; `task_experts` ([T, Et, ...]: task t's Et encoders), the gates
  (`gate_w` [T, D, Es + Et], `gate_b`) and the heads are per task (axis 0).
  """

  output_params = parts.OUTPUT_PARAMS

  def __init__(self, *, encoder: str, width: int, depth: int, num_tasks: int,
               image_shape, head_hidden: int = 0, dropout: float = 0.0,
               encoder_kwargs: dict | None = None, dtype=jnp.float32,
               outputs_per_task=None, num_shared_experts: int = 2,
               num_task_experts: int = 1, rngs: nnx.Rngs):
    """Args (besides every architecture's, see MultiTaskNet):
      num_shared_experts: Es, experts that every task's gate mixes.
      num_task_experts: Et, experts of each task's own.
    """
    if num_shared_experts < 1 or num_task_experts < 1:
      # Es = 0 would leave nothing shared (use share_k with k = 0); Et = 0
      # is MMoE.
      raise ValueError("num_shared_experts and num_task_experts must be at "
                       f"least 1; got {num_shared_experts}, "
                       f"{num_task_experts}")
    make = parts.make_encoder(encoder, image_shape, width=width, depth=depth,
                              dropout=dropout, dtype=dtype,
                              encoder_kwargs=encoder_kwargs)
    self.num_shared_experts = num_shared_experts
    self.num_task_experts = num_task_experts
    self.image_shape = tuple(image_shape)
    self.dtype = dtype
    self.experts = parts.stack(make, num_shared_experts, rngs)
    self.task_experts = parts.stack(
        lambda r: parts.stack(make, num_task_experts, r), num_tasks, rngs)
    self.gate_w, self.gate_b = mmoe.init_gates(
        num_tasks, image_shape, num_shared_experts + num_task_experts, rngs)
    parts.init_heads(self, self.experts.out_features, num_tasks,
                     outputs_per_task, head_hidden, rngs)

  _TASK_PARAMS = ("task_experts", "gate_w", "gate_b")

  @classmethod
  def task_axis(cls, path: tuple[str, ...]) -> int | None:
    """Axis 0 for task experts, gates and heads; None for shared experts."""
    return 0 if path and path[0] in cls._TASK_PARAMS + parts.HEAD_PARAMS \
        else None

  def __call__(self, x, *, rng=None, deterministic=True):
    return self.decode(self.encode(x, rng=rng, deterministic=deterministic),
                       rng=rng, deterministic=deterministic)

  def encode(self, x, *, rng=None, deterministic=True):
    """Images → [B, Es·F + D]: the shared experts' features, then the input.

    Packed as MMoE's (mmoe.pack_rep): the task experts and the gates read
    the input, which rides along parameter-free (decode stops its
    gradient), so the gradient with respect to the representation is that
    of the shared experts' features.
    """
    x = x.astype(self.dtype)
    shared_rng, _ = _split(rng)
    feats = parts.over_copies(
        lambda e, h, k: e(h, rng=k, deterministic=deterministic),
        self.experts, x, shared_rng, self.num_shared_experts, out_axis=1)
    return mmoe.pack_rep(feats, x)

  def decode(self, rep, *, rng=None, deterministic=True):
    """The representation → [B, O] float32 logits."""
    shared, x = mmoe.split_rep(rep, self.num_shared_experts, self.image_shape)
    _, task_rng = _split(rng)

    def one_task(experts, h, key):                 # task t's Et experts
      return parts.over_copies(
          lambda e, hh, k: e(hh, rng=k, deterministic=deterministic),
          experts, h, key, self.num_task_experts, out_axis=1)  # [B, Et, F]

    own = parts.over_copies(one_task, self.task_experts, x, task_rng,
                            self.num_tasks, out_axis=1)   # [B, T, Et, F]
    shared = jnp.broadcast_to(shared[:, None], (shared.shape[0],
                                                self.num_tasks)
                              + shared.shape[1:])
    experts = jnp.concatenate([shared, own.astype(shared.dtype)], axis=2)
    mix = mmoe.gate_mix(x, self.gate_w[...], self.gate_b[...], experts,
                        self.dtype)
    return parts.apply_heads(self, mix)


def _split(rng):
  """Separate dropout keys for the shared and the task experts."""
  if rng is None:
    return None, None
  shared, task = jax.random.split(rng)
  return shared, task


registry.ARCHITECTURES.register("cgc", CGC)
