"""Shared-input fusion of the first CNN stage, for the CPU "scan" step.

All G runs of seed s train on seed s's batch (step.py). Under run_map "scan"
each run's first convolution is a thin one: full resolution, 1-3 channels in,
`width` out, which XLA:CPU runs far below its peak. Here the G runs of a
seed share it. Their kernels are concatenated on the output-channel axis, so
the forward pass is ONE convolution with G·width outputs, and the kernels'
gradient is ONE weight-gradient convolution over the shared input. The ReLU
and the 2×2 pool after it act on each channel alone, so they run wide too,
and each run is handed a quarter-size slice. Only the stages after the first
are scanned run by run:

    h, vjp = jax.vjp(wide_stage, kernels, biases)      # [B, H/2, W/2, G, w]
    for g in runs (a scan):  grads_g, dh_g = grad(rest of the network)(h_g)
    d_kernels, d_biases = vjp(dh)                      # one convolution

The results equal the plain scan's up to float rounding
(tests/test_stem.py); `train.fuse_stem=False` turns the fusion off.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from mtljax import models
from mtljax.core import run_map as run_map_lib
from mtljax.core.run_map import RUN, map_runs
from mtljax.models import encoders

# Where the first convolution's parameters live in the params tree.
STEM = ("encoder", "convs", 0)
# The wide stage holds one seed's G runs' first-stage activations at once
# (before pooling); above this size the step and the evaluation take the
# plain per-run loop instead (e.g. ~90 grouping runs of width 64 on a chunk of
# 1,024 evaluation images would need 24 GB).
MAX_WIDE_BYTES = 1 << 30


def fits(params, image_shape) -> bool:
  """Whether one seed's wide stage for `image_shape` ([..., H, W, C] with
  N examples before H) stays under MAX_WIDE_BYTES; params have [S, G]
  leading axes."""
  k = _get(params, STEM)["kernel"]
  g_count, width = k.shape[1], k.shape[-1]
  n, h, w = image_shape[-4], image_shape[-3], image_shape[-2]
  return n * h * w * g_count * width * 4 <= MAX_WIDE_BYTES


def fusable(model_cfg: Any) -> bool:
  """Whether the fused step applies to this network.

  The built-in shared-encoder network ("hps"), or "share_k" with its first
  stage shared (k ≥ 1), with the CNN encoder in float32 and without
  BatchNorm (whose batch statistics would need the per-run state inside the
  wide stage): its first stage is a plain stride-1
  "SAME" convolution (encoders._conv), ReLU and pool, applied once, to the
  images. Other architectures (e.g. one encoder per task), BatchNorm and
  bfloat16 take the plain step.
  """
  kw = dict(model_cfg.get("encoder_kwargs", {}) or {})
  arch = model_cfg.get("arch", "hps")
  # share_k with k ≥ 1 shares the first stage too, at the same params path
  # (ShareK.encoder.convs[0]); with k = 0 every task has its own.
  shared_first = arch == "hps" or (
      arch == "share_k"
      and dict(model_cfg.get("arch_kwargs", {}) or {}).get(
          "shared_stages", 1) >= 1)
  return (shared_first
          and model_cfg.encoder == "cnn" and model_cfg.dtype == "float32"
          and kw.get("norm", "none") == "none")


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _replace(tree, path, value):
  """A copy of nested dict `tree` with tree[path] = value."""
  if not path:
    return value
  out = dict(tree)
  out[path[0]] = _replace(tree[path[0]], path[1:], value)
  return out


def _pool_of(graphdef, params, model_state) -> str:
  """The CNN's pooling ("max" or "avg"), read off the network itself (run 0
  of leaves with a leading runs axis; at trace time only)."""
  one = jax.tree.map(lambda a: a[0], (params, model_state))
  return nnx.merge(graphdef, *one).encoder.pool


def _wide_stage(x, kernel, bias, pool):
  """The first stage (conv → ReLU → pool) of G runs at once.

  Args:
    x: [B, H, W, C] images (shared by the runs).
    kernel: [G, kh, kw, C, w] the runs' kernels.
    bias: [G, w], or None.
    pool: the encoder's pooling ("max" or "avg").

  Returns:
    [B, H', W', G, w]: run g's stage-0 output is [..., g, :], as
    CNNEncoder.stage(0, x) computes it.
  """
  g_count, kh, kw, c, w = kernel.shape
  wide = jnp.moveaxis(kernel, 0, 3).reshape(kh, kw, c, g_count * w)
  y = encoders._conv(x, wide, None)  # pylint: disable=protected-access
  if bias is not None:
    y = y + bias.reshape(-1)
  y = encoders.relu_pool(y, pool)
  return y.reshape(y.shape[:3] + (g_count, w))


def make_fused_step(graphdef, tx, *, normalize: str, tasks=None) -> Callable:
  """The classic step, with each seed's first stages fused.

  Args:
    graphdef, tx, normalize, tasks: as step.make_train_step.

  Returns:
    `step_fn(state, specs, batch) -> (state, metrics)`, not jitted (the
    caller jits it as the plain step), with step.make_train_step's results.
    The caller checks `fits` (step.make_train_step does).
  """
  from mtljax.core import step as step_lib  # pylint: disable=g-import-not-at-top
  run_update = step_lib.make_run_update(tx)

  def run_grads(params, model_state, spec, batch, step, h):
    """One run's gradients from its first stage's output h."""
    rng = jax.random.fold_in(jax.random.key(spec["seed"]), step)

    def loss_fn(p, h):
      return step_lib.run_loss(graphdef, p, model_state, spec, batch, rng,
                               normalize=normalize, tasks=tasks, stage0=h)

    (loss, (per_task, new_ms)), (grads, dh) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(params, h)
    return grads, dh, new_ms, loss, per_task

  def seed_grads(params, model_state, specs, batch, step):
    """The G runs of one seed (leaves [G, ...]; batch without a runs axis)."""
    x = batch["image"].astype(jnp.float32)  # as MultiTaskNet.encode
    stem = _get(params, STEM)
    pool = _pool_of(graphdef, params, model_state)
    h, stem_vjp = jax.vjp(lambda x, k, b: _wide_stage(x, k, b, pool), x,
                          stem["kernel"], stem.get("bias"))

    def body(carry, i):
      one = run_map_lib._index((params, model_state, specs), i)  # pylint: disable=protected-access
      h_i = jax.lax.dynamic_index_in_dim(h, i, axis=3, keepdims=False)
      return carry, run_grads(*one[:2], one[2], batch, step, h_i)

    g_count = stem["kernel"].shape[0]
    _, (grads, dh, new_ms, loss, per_task) = jax.lax.scan(
        body, (), jnp.arange(g_count))
    # Each run's stem gradient above is zero (the stem was not in its
    # graph); the true one comes from the wide stage's backward pass.
    _, d_kernel, d_bias = stem_vjp(jnp.moveaxis(dh, 0, 3))
    d_stem = dict(_get(grads, STEM), kernel=d_kernel)
    if d_bias is not None:
      d_stem["bias"] = d_bias
    grads = _replace(grads, STEM, d_stem)
    # Per run, as make_run_grads: one reduction gives the norm and the check.
    sq = sum(jnp.sum(jnp.square(g.astype(jnp.float32)).reshape(g_count, -1),
                     axis=1) for g in jax.tree.leaves(grads))
    ok = jnp.isfinite(loss) & jnp.isfinite(sq)
    metrics = {"loss": loss, "task_loss": per_task, "grad_norm": jnp.sqrt(sq),
               "nonfinite": (~ok).astype(jnp.int32)}
    return grads, new_ms, metrics

  def guarded_update(params, opt_state, model_state, grads, new_ms, spec,
                     nonfinite):
    # A cond per run, as step.make_run_step (see its comment).
    return jax.lax.cond(
        nonfinite == 0,
        lambda p, o, m, g, nm: run_update(p, o, g, spec) + (nm,),
        lambda p, o, m, g, nm: (p, o, m),
        params, opt_state, model_state, grads, new_ms)

  update_fn = map_runs(guarded_update, "scan",
                       (RUN, RUN, RUN, RUN, RUN, RUN, RUN), carry=(0, 1, 2))

  def step_fn(state, specs, batch):
    # One seed at a time: the wide stage's output is G runs' size.
    def per_seed(carry, xs):
      params, model_state, seed_specs, seed_batch = xs
      return carry, seed_grads(params, model_state, seed_specs, seed_batch,
                               state.step)

    _, (grads, new_ms, metrics) = jax.lax.scan(
        per_seed, (), (state.params, state.model_state, specs, batch))
    params, opt_state, model_state = update_fn(
        state.params, state.opt_state, state.model_state, grads, new_ms,
        specs, metrics["nonfinite"])
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state,
                         model_state=model_state), metrics

  return step_fn


def make_fused_logits(graphdef) -> Callable:
  """step.make_eval_fn's `logits(params, model_state, images)`, fused.

  The evaluation images are shared by every run, so each seed's G first
  stages are one wide stage, as in training; the rest of each network is
  scanned run by run. Returns [S, G, N, O] logits, not jitted. Above
  MAX_WIDE_BYTES it is the plain per-run scan.
  """
  def logits(params, model_state, images):
    if not fits(params, images.shape):
      return map_runs(lambda p, ms, x: models.apply(
          graphdef, p, ms, x, deterministic=True)[0], "scan",
                      (RUN, RUN, run_map_lib.SHARED))(
                          params, model_state, images)
    x = images.astype(jnp.float32)  # as MultiTaskNet.encode

    def per_seed(carry, xs):
      p, ms = xs
      stem = _get(p, STEM)
      h = _wide_stage(x, stem["kernel"], stem.get("bias"),
                      _pool_of(graphdef, p, ms))

      def body(c, i):
        p_i, ms_i = run_map_lib._index((p, ms), i)  # pylint: disable=protected-access
        h_i = jax.lax.dynamic_index_in_dim(h, i, axis=3, keepdims=False)
        return c, models.apply(graphdef, p_i, ms_i, images,
                               deterministic=True, stage0=h_i)[0]

      return carry, jax.lax.scan(body, (), jnp.arange(h.shape[3]))[1]

    return jax.lax.scan(per_seed, (), (params, model_state))[1]

  return logits
