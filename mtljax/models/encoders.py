"""Encoders with one `width` knob, so size sweeps change a single number.

    enc = MLPEncoder(in_shape=(32, 32, 3), width=64, depth=2, rngs=nnx.Rngs(0))
    feats = enc(images)            # [B, enc.out_features]

Adding an encoder: write a `nnx.Module` whose `__init__(in_shape, *, width,
depth, dropout, dtype, rngs, **its own settings)` sets `out_features`, with
`__call__(x, *, rng=None, deterministic=True)` and a class attribute
`convolutional`, and register it: `registry.ENCODERS.register("name", cls)`.
Its own settings come from `config.model.encoder_kwargs` (docs/EXTENDING.md).
Architectures that share some stages and not others (share_k, cross_stitch,
mtan) also need staged access: `stage(i, x, ...)`, `finish(x, ...)`,
`keep_stages(start, stop)` and `num_stages`/`stage_features`, as here.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from mtljax import registry


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x, w, pet):
  """x [..., n] @ w [n, m], with a backward pass that vmaps well.

  JAX's own transpose rule computes the weight gradient as dot(g, x) and
  then transposes it. Without a runs axis XLA folds that transpose away;
  vmapped over runs it does not, and every consumer of the gradient
  (gradient norm, Adam's moments) then reads it transposed, element by
  element, from memory: on XLA:CPU that made the optimizer update of a
  3072x1024 layer ~3x slower (docs/PERFORMANCE.md). Here the weight gradient
  is computed in the weight's own layout, [n, m], batched or not.
  """
  return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())),
                             preferred_element_type=pet)


def _matmul_fwd(x, w, pet):
  return _matmul(x, w, pet), (x, w)


def _matmul_bwd(pet, res, g):
  x, w = res
  g = g.astype(x.dtype)
  dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())),
                           preferred_element_type=pet)
  x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
  dw = jax.lax.dot_general(x2, g2, (((0,), (0,)), ((), ())),
                           preferred_element_type=pet)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _dot_general(lhs, rhs, dimension_numbers, precision=None,
                 preferred_element_type=None, **kwargs):
  """nnx.Linear's dot_general: `_matmul` for its x @ kernel contraction."""
  (lc, rc), (lb, rb) = dimension_numbers
  # float32 only: XLA:CPU has no bf16 x bf16 -> f32 kernel for the batched
  # weight-gradient dot (JAX's own rule avoids it for bf16).
  if (tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and not lb and not rb
      and rhs.ndim == 2 and precision is None and not kwargs.get("out_sharding")
      and lhs.dtype == rhs.dtype == jnp.float32):
    return _matmul(lhs, rhs, preferred_element_type)
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                             preferred_element_type=preferred_element_type,
                             **kwargs)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv_same(x, w, pet):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                      dimension_numbers=_NHWC,
                                      preferred_element_type=pet)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, pet):
  """Stride-1 "SAME" convolution (NHWC, HWIO, odd kernel) with a backward
  pass written as two plain forward convolutions.

  XLA:CPU runs only convolutions in the canonical forward form fast
  (Eigen/oneDNN); it rewrites the gradient convolutions into that form in
  straight-line code but not inside loops, where they fall back to a naive
  loop ~100x slower (docs/PERFORMANCE.md). Written out here, both gradients
  are canonical wherever the step runs.
  """
  return _conv_same(x, w, pet)


def _conv_fwd(x, w, pet):
  return _conv(x, w, pet), (x, w)


def _conv_bwd(pet, res, g):
  x, w = res
  kh, kw = w.shape[0], w.shape[1]
  g = g.astype(x.dtype)
  # dx: correlate g with the flipped kernel, in/out channels swapped.
  dx = _conv_same(g, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), pet)
  # dw[i, j, c, o] = sum_{b,h,w} x_pad[b, h+i, w+j, c] g[b, h, w, o]: a
  # convolution with channels as batch, batch as features and g as kernel.
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  dw = jax.lax.conv_general_dilated(
      x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), (1, 1),
      ((ph, kh - 1 - ph), (pw, kw - 1 - pw)), dimension_numbers=_NHWC,
      preferred_element_type=pet)                       # [c, kh, kw, o]
  return dx.astype(x.dtype), dw.transpose(1, 2, 0, 3).astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def _conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                          rhs_dilation=None, dimension_numbers=None,
                          feature_group_count=1, precision=None,
                          preferred_element_type=None, **kwargs):
  """nnx.Conv's conv_general_dilated: `_conv` for its plain 2-D case."""
  plain = (lhs.ndim == 4 and tuple(window_strides) == (1, 1)
           and lhs.dtype == rhs.dtype == jnp.float32  # as in _dot_general
           and padding == "SAME" and tuple(lhs_dilation or (1, 1)) == (1, 1)
           and tuple(rhs_dilation or (1, 1)) == (1, 1)
           and feature_group_count == 1 and precision is None
           and rhs.shape[0] % 2 == 1 and rhs.shape[1] % 2 == 1
           and jax.lax.conv_dimension_numbers(
               lhs.shape, rhs.shape, dimension_numbers)
           == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
           and not kwargs.get("out_sharding"))
  if plain:
    return _conv(lhs, rhs, preferred_element_type)
  return jax.lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, precision=precision,
      preferred_element_type=preferred_element_type, **kwargs)


def lecun_normal(fan_in_axes=None):
  """LeCun-normal initialiser (truncated normal, variance 1/fan_in).

  The values follow `jax.nn.initializers.lecun_normal`, but the draw is made
  flat and reshaped: XLA:CPU compiles a multi-dimensional truncated-normal
  draw ~4x slower (1.5 s vs 0.4 s for the CNN's kernels), a cost every
  program paid before its first step.

  Args:
    fan_in_axes: the axes whose sizes multiply to the fan-in; None means all
      but the last (a dense [in, out] or convolution [h, w, in, out] kernel).
  """
  def init(key, shape, dtype=jnp.float32):
    axes = (range(len(shape) - 1) if fan_in_axes is None else fan_in_axes)
    fan_in = math.prod(shape[a] for a in axes)
    # 0.8796...: the std of a standard normal truncated to [-2, 2].
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    z = jax.random.truncated_normal(key, -2.0, 2.0, (math.prod(shape),), dtype)
    return (z * std).reshape(shape)

  return init


def _dense(n_in, n_out, dtype, rngs):
  # float32 accumulation even for bf16 compute: on CPUs with AMX and on GPUs
  # a bf16 dot without preferred_element_type falls off the fast path.
  pet = jnp.float32 if dtype == jnp.bfloat16 else None
  return nnx.Linear(n_in, n_out, dtype=dtype, preferred_element_type=pet,
                    dot_general=_dot_general, kernel_init=lecun_normal(),
                    rngs=rngs)


class MLPEncoder(nnx.Module):
  """Flatten → depth × [Dense(width) → ReLU]."""

  convolutional = False  # the run map: "vmap" everywhere (run_map.py)

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

  # Staged access, for architectures that share some stages and not others
  # (models/share_k.py, cross_stitch.py, mtan.py). __call__ is
  # `finish(stage(depth-1, ... stage(0, x)))`, op for op.
  @property
  def num_stages(self) -> int:
    return len(self.layers)

  @property
  def stage_features(self) -> tuple[int, ...]:
    """The features each stage outputs."""
    return tuple(layer.out_features for layer in self.layers)

  def stage(self, i, x, *, rng=None, deterministic=True):
    """Stage i: Dense → ReLU (→ dropout); flattens an image input first."""
    x = jax.nn.relu(self.layers[i](x.reshape(x.shape[0], -1)))
    if self.dropout is not None:
      x = self.dropout(x, deterministic=deterministic, rngs=rng)
    return x

  def finish(self, x, *, rng=None, deterministic=True):
    """Features after the last stage: [B, out_features]."""
    del rng, deterministic  # the MLP's dropout is inside its stages
    return x.reshape(x.shape[0], -1)

  def keep_stages(self, start: int, stop: int) -> "MLPEncoder":
    """Keeps only stages [start, stop) (indices renumber from 0); returns self.

    An architecture that owns a slice of the encoder builds the whole one
    and drops the rest, so a slice has exactly the layers (and initialiser
    fan-ins) of the full encoder's.
    """
    if not 0 <= start < stop <= len(self.layers):
      raise ValueError(f"stages [{start}, {stop}) of {len(self.layers)}")
    self.layers = nnx.List(list(self.layers)[start:stop])
    self.out_features = self.layers[-1].out_features
    return self


def _pool2x2(x, pool: str):
  """2×2 max or average pool, stride 2 (an odd last row/column is dropped).

  A reduce over a [B, H/2, 2, W/2, 2, C] reshape. The max of four strided
  slices was measured as an alternative (`scripts/bench.py --only opt`) and
  was no faster beyond the machine's noise.
  """
  b, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)
  return jnp.max(x, axis=(2, 4)) if pool == "max" else x.mean(axis=(2, 4))


def relu_pool(x, pool: str):
  """ReLU → 2×2 pool (none once H or W is below 2): one CNN stage's tail.

  Channel-wise, so the fused first stage (core/stem.py) applies it to all
  runs' channels at once. (Pooling before the ReLU, exact for max pooling,
  and a custom elementwise max-pool backward were each tried in the study's
  step, interleaved with this form, and were no faster.)
  """
  x = jax.nn.relu(x)
  if x.shape[1] >= 2 and x.shape[2] >= 2:
    x = _pool2x2(x, pool)
  return x


class CNNEncoder(nnx.Module):
  """depth × [Conv3x3(width·2^i) → (BN) → ReLU → 2×2 pool] → global pool.

  Channels scale linearly with `width`, so parameters scale ~width².
  `pool` is "max" or "avg", for both the 2×2 and the global pooling. Max
  pooling answers "is this feature present anywhere", which is what a
  presence label asks; an average dilutes a small object's evidence by the
  image area. `norm` is "none" or "batch" (an nnx.BatchNorm after each
  convolution, whose running statistics are the model state: batch
  statistics in training, running ones in evaluation).
  """

  # On XLA:CPU vmapped convolutions are slow: "auto" scans the runs there.
  convolutional = True

  def __init__(self, in_shape, *, width: int, depth: int = 3,
               dropout: float = 0.0, pool: str = "max", norm: str = "none",
               dtype=jnp.float32, rngs: nnx.Rngs):
    if pool not in ("max", "avg"):
      raise ValueError(f"pool must be 'max' or 'avg'; got {pool!r}")
    if norm not in ("none", "batch"):
      raise ValueError(f"norm must be 'none' or 'batch'; got {norm!r}")
    self.pool = pool
    c_in = in_shape[-1]
    self.convs = nnx.List()
    self.norms = nnx.List() if norm == "batch" else None
    for i in range(depth):
      c_out = width * 2**i
      # No conv bias before a BatchNorm: the mean subtraction cancels it, so
      # it would get zero gradient and only inflate the parameter count.
      self.convs.append(nnx.Conv(c_in, c_out, (3, 3), dtype=dtype,
                                 use_bias=self.norms is None,
                                 conv_general_dilated=_conv_general_dilated,
                                 kernel_init=lecun_normal(),
                                 rngs=rngs))
      if self.norms is not None:
        self.norms.append(nnx.BatchNorm(c_out, dtype=dtype, rngs=rngs))
      c_in = c_out
    self.dropout = nnx.Dropout(dropout) if dropout > 0 else None
    self.out_features = c_in

  def __call__(self, x, *, rng=None, deterministic=True, stage0=None):
    """[B, H, W, C] images → [B, F] features.

    `stage0`, when given, is stage 0's output for `x`, computed by the
    caller: the CPU step computes it for all runs of a seed at once, as one
    wide convolution (core/stem.py; only without BatchNorm).
    """
    for i, conv in enumerate(self.convs):
      if i == 0 and stage0 is not None:
        x = stage0
        continue
      x = conv(x)
      if self.norms is not None:
        x = self.norms[i](x, use_running_average=deterministic)
      x = relu_pool(x, self.pool)
    x = jnp.max(x, axis=(1, 2)) if self.pool == "max" else x.mean(axis=(1, 2))
    if self.dropout is not None:
      x = self.dropout(x, deterministic=deterministic, rngs=rng)
    return x

  # Staged access, as MLPEncoder's: __call__ is finish(stage(...)), op for op.
  @property
  def num_stages(self) -> int:
    return len(self.convs)

  @property
  def stage_features(self) -> tuple[int, ...]:
    """The channels each stage outputs."""
    return tuple(conv.out_features for conv in self.convs)

  def stage(self, i, x, *, rng=None, deterministic=True):
    """Stage i: Conv3x3 → (BN) → ReLU → 2×2 pool."""
    del rng  # the CNN's dropout is after the global pool (finish)
    x = self.convs[i](x)
    if self.norms is not None:
      x = self.norms[i](x, use_running_average=deterministic)
    return relu_pool(x, self.pool)

  def finish(self, x, *, rng=None, deterministic=True):
    """Global pool (→ dropout): [B, H, W, C] → [B, C]."""
    x = jnp.max(x, axis=(1, 2)) if self.pool == "max" else x.mean(axis=(1, 2))
    if self.dropout is not None:
      x = self.dropout(x, deterministic=deterministic, rngs=rng)
    return x

  def keep_stages(self, start: int, stop: int) -> "CNNEncoder":
    """Keeps only stages [start, stop) (see MLPEncoder.keep_stages)."""
    if not 0 <= start < stop <= len(self.convs):
      raise ValueError(f"stages [{start}, {stop}) of {len(self.convs)}")
    self.convs = nnx.List(list(self.convs)[start:stop])
    if self.norms is not None:
      self.norms = nnx.List(list(self.norms)[start:stop])
    self.out_features = self.convs[-1].out_features
    return self


# One line per encoder (see mtljax/registry.py); a user's registers the same way.
ENCODERS = registry.ENCODERS
ENCODERS.register("mlp", MLPEncoder)
ENCODERS.register("cnn", CNNEncoder)
