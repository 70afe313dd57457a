"""Multi-Task Attention Network (MTAN; Liu, Johns & Davison, CVPR 2019).

    cfg.model.arch = "mtan"

A shared encoder (MLP or CNN) and, for each task, a soft attention module
on every stage's features: at stage i, with s_i the shared stage output and
f_{t,i-1} task t's previous attended feature,

    a_{t,i} = sigmoid(W2 relu(W1 [s_i, f_{t,i-1}] + b1) + b2)    (i = 0: s_0)
    f_{t,i} = a_{t,i} ⊙ s_i

then task t's head reads f_{t,depth-1} (globally pooled, for the CNN). As
LibMTL's MTAN, in spirit: its attention layers are two 1x1 convolutions
(per-pixel dense layers for the MLP), here without BatchNorm and with the
stage's own width inside, and f_{t,i-1} reaches stage i's resolution by the
encoder's 2x2 pool instead of LibMTL's shared residual block (sized for our
small encoders).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mtljax import registry
from mtljax.models import parts
from mtljax.models.encoders import _pool2x2, lecun_normal


class MTAN(nnx.Module):
  """Shared encoder → per-task attention masks on each stage → heads.

  Parameters: `encoder` is shared; the attention modules (`att_w1`,
  `att_b1`, `att_w2`, `att_b2`: one [T, ...] array per stage) and the heads
  are per task (axis 0): task t's masks shape only task t's features.
  """

  output_params = parts.OUTPUT_PARAMS
  _TASK_PARAMS = ("att_w1", "att_b1", "att_w2", "att_b2")

  def __init__(self, *, encoder: str, width: int, depth: int, num_tasks: int,
               image_shape, head_hidden: int = 0, dropout: float = 0.0,
               encoder_kwargs: dict | None = None, dtype=jnp.float32,
               outputs_per_task=None, rngs: nnx.Rngs):
    self.encoder = parts.make_encoder(
        encoder, image_shape, width=width, depth=depth, dropout=dropout,
        dtype=dtype, encoder_kwargs=encoder_kwargs)(rngs)
    parts.require_staged(self.encoder, "mtan")
    self.dtype = dtype
    init = lecun_normal(fan_in_axes=(1,))   # [T, in, out]: fan-in = in
    feats = self.encoder.stage_features
    self.att_w1, self.att_b1 = nnx.List(), nnx.List()
    self.att_w2, self.att_b2 = nnx.List(), nnx.List()
    for i, c in enumerate(feats):
      c_in = c + (feats[i - 1] if i > 0 else 0)
      self.att_w1.append(nnx.Param(init(rngs.params(), (num_tasks, c_in, c))))
      self.att_b1.append(nnx.Param(jnp.zeros((num_tasks, c))))
      self.att_w2.append(nnx.Param(init(rngs.params(), (num_tasks, c, c))))
      self.att_b2.append(nnx.Param(jnp.zeros((num_tasks, c))))
    parts.init_heads(self, self.encoder.out_features, num_tasks,
                     outputs_per_task, head_hidden, rngs)

  @classmethod
  def task_axis(cls, path: tuple[str, ...]) -> int | None:
    """Axis 0 for the attention modules and heads; None for the encoder."""
    return 0 if path and path[0] in cls._TASK_PARAMS + parts.HEAD_PARAMS \
        else None

  def _dense(self, w, b, h):
    """Per-task, per-position dense layer: [T, B, ..., c] → [T, B, ..., d]."""
    return jnp.einsum("tb...c,tcd->tb...d", h, w[...].astype(h.dtype),
                      preferred_element_type=jnp.float32) + b[...].reshape(
                          (h.shape[0],) + (1,) * (h.ndim - 2) + (-1,))

  def __call__(self, x, *, rng=None, deterministic=True):
    s = x.astype(self.dtype)
    t = self.num_tasks
    f = None                                     # [T, B, ...] task features
    for i in range(self.encoder.num_stages):
      s = self.encoder.stage(i, s, rng=rng, deterministic=deterministic)
      inp = jnp.broadcast_to(s, (t,) + s.shape)
      if f is not None:
        if f.shape[2:-1] != s.shape[1:-1]:       # back to the stage's grid
          f = _pool2x2(f.reshape((-1,) + f.shape[2:]), self.encoder.pool
                       ).reshape(f.shape[:2] + s.shape[1:-1] + f.shape[-1:])
        inp = jnp.concatenate([inp, f], axis=-1)
      a = jax.nn.relu(self._dense(self.att_w1[i], self.att_b1[i], inp))
      a = jax.nn.sigmoid(self._dense(self.att_w2[i], self.att_b2[i],
                                     a.astype(self.dtype)))
      f = (a.astype(self.dtype) * s).astype(self.dtype)
    keys = parts.copy_keys(rng, t)
    finish = lambda h, k: self.encoder.finish(h, rng=k,
                                              deterministic=deterministic)
    feats = (jax.vmap(finish)(f, keys) if keys is not None
             else jax.vmap(lambda h: finish(h, None))(f))
    return parts.apply_heads(self, jnp.moveaxis(feats, 0, 1))  # [B, T, F]


registry.ARCHITECTURES.register("mtan", MTAN)
