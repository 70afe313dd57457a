"""A shared encoder with T one-logit heads, and its pure functional form.

One network class serves both modes. A *run* trains one network on a *task
group* (a [T] 0/1 mask): multi-task learning (MTL) is the group of all tasks,
single-task learning (STL) is T runs with one task each. The heads of tasks
outside a run's group receive exactly zero gradient and are excluded from its
parameter count, so an STL run *is* an independent single-task network.

    net = MultiTaskNet(model_cfg, image_shape, num_tasks, rngs=nnx.Rngs(0))
    graphdef, params, model_state = create(model_cfg, image_shape, T, key)
    logits, model_state = apply(graphdef, params, model_state, images)  # [B, T]

The pure `apply(graphdef, params, model_state, x)` is what the train step
maps over runs and jit-shards over devices (the Flax gemma example's
split/merge form). `model_state` holds every variable that is not an
nnx.Param (BatchNorm's running statistics); it is {} for most networks.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mtljax import config as config_lib
from mtljax import registry
from mtljax.models import parts


class MultiTaskNet(nnx.Module):
  """Encoder → per-task heads (optional hidden layer), sized per task.

  Task t has `outputs_per_task[t]` outputs (1 for binary and regression
  tasks, K for a K-way task). All heads are one matmul over the O = Σ outputs
  columns; the fixed table `output_tasks` ([O], the task of each column)
  says which task a column belongs to, so T heads stay one fused op.
  """

  # Parameters on the output axis (O columns), not the task axis (T).
  output_params = ("out_w", "out_b")

  def __init__(self, *, encoder: str, width: int, depth: int, num_tasks: int,
               image_shape, head_hidden: int = 0, dropout: float = 0.0,
               encoder_kwargs: dict | None = None, dtype=jnp.float32,
               outputs_per_task=None, rngs: nnx.Rngs):
    # The registry's get() names the field and the registered choices.
    self.encoder = registry.ENCODERS.get(encoder)(
        tuple(image_shape), width=width, depth=depth, dropout=dropout,
        dtype=dtype, rngs=rngs, **(encoder_kwargs or {}))
    # The heads' parameters are drawn after the encoder's, as always.
    parts.init_heads(self, self.encoder.out_features, num_tasks,
                     outputs_per_task, head_hidden, rngs)
    self.dtype = dtype

  @staticmethod
  def task_axis(path: tuple[str, ...]) -> int | None:
    """The task axis of the parameter at `path`, or None if it is shared.

    How parameter counts (and, later, aggregators) tell a run's shared
    parameters from each task's own: the heads are stacked on axis 0, and
    every other parameter (the encoder) is shared by the tasks of a group.
    """
    return 0 if path and path[0] in _HEAD_PARAMS else None

  def __call__(self, x, *, rng=None, deterministic=True, **encoder_kwargs):
    return self.decode(self.encode(x, rng=rng, deterministic=deterministic,
                                   **encoder_kwargs),
                       rng=rng, deterministic=deterministic)

  # The shared representation, for gradients taken with respect to it
  # (method.rep_grad): encode uses only shared parameters, decode only
  # per-task ones, and decode(encode(x)) is __call__(x), op for op.
  def encode(self, x, *, rng=None, deterministic=True, **encoder_kwargs):
    """[B, H, W, C] images → the encoder's features [B, F].

    `encoder_kwargs` go to the encoder (CNNEncoder's `stage0`).
    """
    return self.encoder(x.astype(self.dtype), rng=rng,
                        deterministic=deterministic, **encoder_kwargs)

  def decode(self, rep, *, rng=None, deterministic=True):
    """Features [B, F] → [B, O] float32 logits (the heads)."""
    del rng, deterministic  # the heads have no dropout
    return parts.apply_heads(self, rep)


def create(model_cfg: Any, image_shape, num_tasks, key: jax.Array):
  """Builds a network and splits it into (graphdef, params).

  Args:
    model_cfg: the config's `model` block (encoder, width, depth, head_hidden,
      dropout, dtype).
    image_shape: (H, W, C) of one input image.
    num_tasks: T (every task one output), or the T `mtljax.tasks.Task`s
      (each head sized by its task: K outputs for a K-way task).
    key: PRNG key for the initial parameters.

  Returns:
    (graphdef, params, model_state): the static structure, the parameters
    and every other variable (e.g. nnx.BatchStat; {} if there is none), each
    as a nested dict of arrays.
  """
  graphdef, params, model_state = nnx.split(
      _build(model_cfg, image_shape, num_tasks, key), nnx.Param, ...)
  # Plain nested dicts of arrays: the friendliest pytrees for optax, vmap,
  # shardings and orbax. nnx.merge accepts them back directly.
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(model_state)


def outputs_per_task(num_tasks) -> tuple[int, ...]:
  """(T,) outputs of each task, from T (all one output) or the Tasks."""
  if isinstance(num_tasks, (int, np.integer)):
    return (1,) * int(num_tasks)
  return tuple(t.num_outputs for t in num_tasks)


def _build(model_cfg: Any, image_shape, num_tasks, key) -> MultiTaskNet:
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[model_cfg.dtype]
  sizes = outputs_per_task(num_tasks)
  # A network whose tasks all have one output is built exactly as before the
  # heads were sized per task (a user architecture may not take the option).
  extra = {} if set(sizes) <= {1} else {"outputs_per_task": sizes}
  return registry.ARCHITECTURES.get(model_cfg.get("arch", "hps"))(
      encoder=model_cfg.encoder, width=model_cfg.width, depth=model_cfg.depth,
      num_tasks=len(sizes), image_shape=image_shape, **extra,
      head_hidden=model_cfg.head_hidden, dropout=model_cfg.dropout,
      encoder_kwargs=config_lib.to_dict(model_cfg.get("encoder_kwargs", {})),
      dtype=dtype, rngs=nnx.Rngs(params=key),
      **config_lib.to_dict(model_cfg.get("arch_kwargs", {})))


def graphdef(model_cfg: Any, image_shape, num_tasks):
  """The network's static structure, built abstractly (nothing allocated).

  Building the network eagerly just for its graphdef runs every initialiser
  op by op, each a small XLA compile: ~2.4 s for the CNN on CPU, paid by
  every program before its first step.
  """
  abstract = nnx.eval_shape(
      lambda: _build(model_cfg, image_shape, num_tasks, jax.random.key(0)))
  # The same filters as create's split, so that the two graphdefs agree.
  return nnx.split(abstract, nnx.Param, ...)[0]


def apply(graphdef, params, model_state, x, *, rng=None, deterministic=True,
          stage0=None):
  """Pure forward pass: [B, H, W, C] images → [B, T] float32 logits.

  Args:
    graphdef: from create or graphdef.
    params: the parameters (create's second output).
    model_state: the non-parameter variables (create's third output).
    x: [B, H, W, C] images.
    rng: PRNG key for dropout (training mode only).
    deterministic: inference mode: no dropout, and BatchNorm normalises with
      its running statistics instead of the batch's (and leaves them as
      they are).
    stage0: the encoder's first stage's output for `x`, computed by the
      caller (core/stem.py); only for networks that `stem.fusable` accepts.

  Returns:
    (logits [B, O], new_model_state): O = Σ outputs per task (T when every
    task has one output); the model state after the pass, of
    model_state's structure (in training mode BatchNorm's running
    statistics move towards the batch's).
  """
  net = nnx.merge(graphdef, params, model_state)
  extra = {} if stage0 is None else {"stage0": stage0}
  logits = net(x, rng=rng, deterministic=deterministic, **extra)
  return logits, nnx.to_pure_dict(nnx.split(net, nnx.Param, ...)[2])


def is_convolutional(model_cfg: Any) -> bool:
  """Whether the model's encoder is convolutional (picks the run map).

  Args:
    model_cfg: the config's `model` block, or an encoder name.
  """
  name = model_cfg if isinstance(model_cfg, str) else model_cfg.encoder
  # A user's encoder that does not say is treated as dense (it gets "vmap",
  # the design's default run map).
  return bool(getattr(registry.ENCODERS.get(name), "convolutional", False))


_HEAD_PARAMS = parts.HEAD_PARAMS


def param_count(params, task_mask=None, arch: str = "hps",
                outputs_per_task=None) -> int:
  """Trainable parameters of one network, counting only heads in its group.

  Args:
    params: one run's parameter state (no leading runs axis).
    task_mask: optional [T] 0/1 group mask; None counts every task's part.
    arch: the architecture, which says which parameters belong to a task.
    outputs_per_task: (T,) outputs of each task (None: one each).

  Returns:
    Shared parameters + the task-specific parameters of the group's tasks:
    a per-task leaf (`task_axis` not None) counts the group's share of its
    task axis (of its output columns for `output_params`). An architecture
    with a static `param_count(params, task_mask, outputs_per_task)` counts
    itself instead.
  """
  cls = registry.ARCHITECTURES.get(arch)
  if callable(getattr(cls, "param_count", None)):
    # An architecture whose task-specific parts are not slices of a task
    # axis counts itself.
    return int(cls.param_count(params, task_mask, outputs_per_task))
  per_output = getattr(cls, "output_params", ())
  total = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    shape = np.shape(leaf)
    n = math.prod(shape)
    keys = tuple(getattr(k, "key", str(k)) for k in path)
    axis = cls.task_axis(keys)
    if axis is not None and task_mask is not None:
      mask = np.asarray(task_mask, np.float64)
      if keys[0] in per_output and outputs_per_task is not None:
        # On the output axis: the group owns its tasks' output columns.
        mask = np.repeat(mask, outputs_per_task)
      n = int(round(n * float(np.sum(mask)) / shape[axis]))
    total += n
  return total


def count_params(model_cfg: Any, image_shape, num_tasks,
                 task_mask=None) -> int:
  """Parameter count of a network built from `model_cfg`, without allocating.

  Args:
    model_cfg: the `model` config block.
    image_shape: (H, W, C).
    num_tasks: T, or the Tasks (see `create`).
    task_mask: optional [T] group mask (None: all heads).
  """
  shapes = jax.eval_shape(
      lambda k: create(model_cfg, image_shape, num_tasks, k)[1],
      jax.random.key(0))
  return param_count(shapes, task_mask, model_cfg.get("arch", "hps"),
                     outputs_per_task(num_tasks))


def forward_flops(model_cfg: Any, image_shape, num_tasks,
                  task_mask=None) -> float:
  """Forward FLOPs per example of a group's network, by XLA's cost analysis.

  The network is compiled for one example with only the group's outputs
  returned, so that XLA may drop what only the other tasks need. The
  built-in heads are one stacked product over the tasks, which XLA keeps
  whole, so in practice this is the network's cost as mtljax runs it, the
  other tasks' heads included (for HPS they are 2·F FLOPs each: well under
  1%). A grouping search's FLOP budget (config.grouping.flop_budgets) sums
  these over the chosen networks.

  Args:
    model_cfg, image_shape, num_tasks: as `count_params`.
    task_mask: optional [T] group mask (None: every task).
  """
  sizes = outputs_per_task(num_tasks)
  mask = np.ones(len(sizes)) if task_mask is None else np.asarray(task_mask)
  start = np.cumsum((0,) + sizes)
  cols = np.concatenate([np.arange(start[t], start[t + 1])
                         for t in range(len(sizes)) if mask[t]])
  gd = graphdef(model_cfg, image_shape, num_tasks)
  _, params, model_state = nnx.split(nnx.eval_shape(
      lambda: _build(model_cfg, image_shape, num_tasks, jax.random.key(0))),
                                     nnx.Param, ...)
  x = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
  fn = lambda p, s, x: apply(gd, p, s, x)[0][:, cols]
  cost = jax.jit(fn).lower(params, model_state, x).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per device
    cost = cost[0]
  return float(cost.get("flops", float("nan")))


def matched_mtl_width(model_cfg: Any, image_shape, num_tasks) -> int:
  """The MTL width whose one network costs ≈ the T STL networks' compute.

  Returns the width w' >= model_cfg.width minimising |FLOPs_MTL(w') −
  Σ_t FLOPs_STL,t(w)| (forward FLOPs per example, `forward_flops`): the
  equal-compute MTL arm ("mtl_matched"). FLOPs grow with the width, so a
  bisection over [w, 8w] needs a handful of (small, one-example) compiles.
  For the CNN, whose FLOPs grow about as w², this is about 2w at T = 4.
  """
  sizes = outputs_per_task(num_tasks)
  eye = np.eye(len(sizes))
  target = sum(forward_flops(model_cfg, image_shape, num_tasks, eye[t])
               for t in range(len(sizes)))
  cache: dict[int, float] = {}

  def flops(w):
    if w not in cache:
      cfg = model_cfg.copy_and_resolve_references()
      cfg.width = w
      cache[w] = forward_flops(cfg, image_shape, num_tasks)
    return cache[w]

  lo, hi = model_cfg.width, 8 * model_cfg.width
  while hi - lo > 1:  # the smallest width with FLOPs >= target is in (lo, hi]
    mid = (lo + hi) // 2
    if flops(mid) >= target:
      hi = mid
    else:
      lo = mid
  return min((lo, hi), key=lambda w: (abs(flops(w) - target), w))


def matched_stl_width(model_cfg: Any, image_shape, num_tasks) -> int:
  """The STL width whose T single-task networks ≈ one MTL network in size.

  Returns the width w' minimising |Σ_t params(w', head t) − params_MTL(w)|,
  for parameter-matched comparisons (Caruana 1997; Standley et al. 2020).
  """
  target = count_params(model_cfg, image_shape, num_tasks)
  sizes = outputs_per_task(num_tasks)
  eye = np.eye(len(sizes))
  arch = model_cfg.get("arch", "hps")
  best, best_gap = 1, None
  for w in range(1, model_cfg.width + 1):
    cfg = model_cfg.copy_and_resolve_references()
    cfg.width = w
    shapes = jax.eval_shape(
        lambda k, c=cfg: create(c, image_shape, num_tasks, k)[1],
        jax.random.key(0))
    # The T single-task networks together (heads may differ in size).
    gap = abs(sum(param_count(shapes, eye[t], arch, sizes)
                  for t in range(len(sizes))) - target)
    if best_gap is None or gap < best_gap:
      best, best_gap = w, gap
  return best


# Hard parameter sharing (everything shared, one head per task). The other
# architectures register themselves in their own modules, imported here
# because this is registry.ARCHITECTURES' built-ins module.
registry.ARCHITECTURES.register("hps", MultiTaskNet)

from mtljax.models import cgc, cross_stitch, mmoe, mtan, share_k  # noqa: E402,F401,I001
