"""Multi-gate Mixture-of-Experts (MMoE; Ma et al., KDD 2018).

    cfg.model.arch = "mmoe"
    cfg.model.arch_kwargs.num_experts = 4

E experts, each a copy of the configured encoder (MLP or CNN), are shared
by all tasks; task t mixes their features with its own softmax gate over
the experts, computed from the flattened input (as LibMTL's MMoE), and
reads the mixture with its own head.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from mtljax import registry
from mtljax.models import parts
from mtljax.models.encoders import lecun_normal


def gate_mix(x, gate_w, gate_b, experts, dtype):
  """Per-task softmax gates over experts, and the mixtures they make.

  Args:
    x: [B, ...] inputs (the gates read them flattened).
    gate_w, gate_b: [T, D, E] and [T, E] gate parameters.
    experts: [B, E, F] features every task may mix, or [B, T, E, F] when
      each task mixes a set of its own.
    dtype: the compute dtype of the result.

  Returns:
    [B, T, F] features, task t's mixture at [:, t].
  """
  flat = x.reshape(x.shape[0], -1)
  logits = jnp.einsum("bd,tde->bte", flat, gate_w.astype(flat.dtype),
                      preferred_element_type=jnp.float32) + gate_b
  gates = jax.nn.softmax(logits, axis=-1)                     # [B, T, E]
  eq = "bte,bef->btf" if experts.ndim == 3 else "bte,btef->btf"
  # The mixture in float32 (a convex combination of bfloat16 features loses
  # little there), then back to the compute dtype for the heads.
  return jnp.einsum(eq, gates, experts.astype(jnp.float32)).astype(dtype)


def init_gates(num_tasks, image_shape, num_choices, rngs):
  """[T, D, E] weights (LeCun-normal over the D inputs) and [T, E] biases."""
  d = math.prod(image_shape)
  w = lecun_normal(fan_in_axes=(1,))(rngs.params(), (num_tasks, d, num_choices))
  return nnx.Param(w), nnx.Param(jnp.zeros((num_tasks, num_choices)))


class MMoE(nnx.Module):
  """E shared experts → per-task softmax gates → per-task heads.

  Parameters: `experts` (the E encoders stacked on axis 0) are shared; the
  gates (`gate_w` [T, D, E], `gate_b` [T, E]) and the heads are per task
  (axis 0). A group of tasks owns its gates and heads, and every expert.
  """

  output_params = parts.OUTPUT_PARAMS

  def __init__(self, *, encoder: str, width: int, depth: int, num_tasks: int,
               image_shape, head_hidden: int = 0, dropout: float = 0.0,
               encoder_kwargs: dict | None = None, dtype=jnp.float32,
               outputs_per_task=None, num_experts: int = 4,
               rngs: nnx.Rngs):
    """Args (besides every architecture's, see MultiTaskNet):
      num_experts: E, the number of shared experts (encoder copies).
    """
    if num_experts < 1:
      raise ValueError(f"num_experts={num_experts} must be at least 1")
    make = parts.make_encoder(encoder, image_shape, width=width, depth=depth,
                              dropout=dropout, dtype=dtype,
                              encoder_kwargs=encoder_kwargs)
    self.num_experts = num_experts
    self.image_shape = tuple(image_shape)
    self.dtype = dtype
    self.experts = parts.stack(make, num_experts, rngs)
    self.gate_w, self.gate_b = init_gates(num_tasks, image_shape, num_experts,
                                          rngs)
    parts.init_heads(self, self.experts.out_features, num_tasks,
                     outputs_per_task, head_hidden, rngs)

  # Per-task parameters (axis 0) besides the heads.
  _TASK_PARAMS = ("gate_w", "gate_b")

  @classmethod
  def task_axis(cls, path: tuple[str, ...]) -> int | None:
    """Axis 0 for the gates and heads; None for the experts."""
    return 0 if path and path[0] in cls._TASK_PARAMS + parts.HEAD_PARAMS \
        else None

  def __call__(self, x, *, rng=None, deterministic=True):
    return self.decode(self.encode(x, rng=rng, deterministic=deterministic),
                       rng=rng, deterministic=deterministic)

  def encode(self, x, *, rng=None, deterministic=True):
    """Images → [B, E·F + D]: the E experts' features, then the input.

    The gates read the input, so decode needs it: it rides along at the end
    of the representation (one array, as rep_grad's step expects), but no
    parameter produces it and decode stops its gradient, so a gradient with
    respect to the representation is exactly zero there and all of it flows
    through the experts' part ([:, :E·F], `split_rep` undoes the packing).
    """
    x = x.astype(self.dtype)
    feats = parts.over_copies(
        lambda e, h, k: e(h, rng=k, deterministic=deterministic),
        self.experts, x, rng, self.num_experts, out_axis=1)   # [B, E, F]
    return pack_rep(feats, x)

  def decode(self, rep, *, rng=None, deterministic=True):
    """The representation → [B, O] float32 logits (gates, then heads)."""
    del rng, deterministic  # gates and heads have no dropout
    experts, x = split_rep(rep, self.num_experts, self.image_shape)
    mix = gate_mix(x, self.gate_w[...], self.gate_b[...], experts,
                   self.dtype)
    return parts.apply_heads(self, mix)


def pack_rep(feats, x):
  """[B, E, F] expert features and [B, ...] inputs → one [B, E·F + D]."""
  b = feats.shape[0]
  return jnp.concatenate([feats.reshape(b, -1), x.reshape(b, -1)], axis=1)


def split_rep(rep, num_experts, image_shape):
  """pack_rep's inverse: ([B, E, F] features, [B, *image_shape] inputs).

  The inputs come out under stop_gradient: they carry no parameter.
  """
  d = math.prod(image_shape)
  feats = rep[:, :rep.shape[1] - d]
  x = jax.lax.stop_gradient(rep[:, rep.shape[1] - d:])
  return (feats.reshape(rep.shape[0], num_experts, -1),
          x.reshape((rep.shape[0],) + tuple(image_shape)))


registry.ARCHITECTURES.register("mmoe", MMoE)
