"""Encoders with one `width` knob, so size sweeps change a single number.

    enc = MLPEncoder(in_shape=(32, 32, 3), width=64, depth=2, rngs=nnx.Rngs(0))
    feats = enc(images)            # [B, enc.out_features]

Adding an encoder: write a `nnx.Module` with `out_features` and
`__call__(x, *, rng=None, deterministic=True)` and add one line to ENCODERS.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def _dense(n_in, n_out, dtype, rngs):
  # float32 accumulation even for bf16 compute: on CPUs with AMX and on GPUs
  # a bf16 dot without preferred_element_type falls off the fast path.
  pet = jnp.float32 if dtype == jnp.bfloat16 else None
  return nnx.Linear(n_in, n_out, dtype=dtype, preferred_element_type=pet,
                    rngs=rngs)


class MLPEncoder(nnx.Module):
  """Flatten → depth × [Dense(width) → ReLU]."""

  def __init__(self, in_shape, *, width: int, depth: int = 2,
               dropout: float = 0.0, dtype=jnp.float32, rngs: nnx.Rngs):
    n_in = math.prod(in_shape)
    self.layers = nnx.List()
    for _ in range(depth):
      self.layers.append(_dense(n_in, width, dtype, rngs))
      n_in = width
    self.dropout = nnx.Dropout(dropout) if dropout > 0 else None
    self.out_features = n_in

  def __call__(self, x, *, rng=None, deterministic=True):
    x = x.reshape(x.shape[0], -1)
    for layer in self.layers:
      x = jax.nn.relu(layer(x))
      if self.dropout is not None:
        x = self.dropout(x, deterministic=deterministic, rngs=rng)
    return x


class CNNEncoder(nnx.Module):
  """depth × [Conv3x3(width·2^i) → ReLU → 2×2 avg-pool] → global avg-pool.

  Channels scale linearly with `width`, so parameters scale ~width².
  """

  def __init__(self, in_shape, *, width: int, depth: int = 3,
               dropout: float = 0.0, dtype=jnp.float32, rngs: nnx.Rngs):
    c_in = in_shape[-1]
    self.convs = nnx.List()
    for i in range(depth):
      c_out = width * 2**i
      self.convs.append(nnx.Conv(c_in, c_out, (3, 3), dtype=dtype, rngs=rngs))
      c_in = c_out
    self.dropout = nnx.Dropout(dropout) if dropout > 0 else None
    self.out_features = c_in

  def __call__(self, x, *, rng=None, deterministic=True):
    for conv in self.convs:
      x = jax.nn.relu(conv(x))
      b, h, w, c = x.shape
      if h >= 2 and w >= 2:  # 2×2 average pool, by reshape (cheap on every backend)
        x = x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)
        x = x.mean(axis=(2, 4))
    x = x.mean(axis=(1, 2))
    if self.dropout is not None:
      x = self.dropout(x, deterministic=deterministic, rngs=rng)
    return x


ENCODERS = {"mlp": MLPEncoder, "cnn": CNNEncoder}
