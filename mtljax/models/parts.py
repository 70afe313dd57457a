"""Pieces the architectures share: per-task heads and stacked module copies.

    init_heads(net, feat, num_tasks, outputs_per_task, head_hidden, rngs)
    logits = apply_heads(net, h)      # h [B, F] shared or [B, T, F] per task

    experts = stack(lambda r: Encoder(..., rngs=r), n, rngs)  # leading axis n
    feats = over_copies(lambda m, x, k: m(x, rng=k), experts, x, rng, n)

Heads live as top-level attributes (hidden_w, hidden_b, out_w, out_b) of
every architecture, so `models.param_count`'s output-axis rule (keyed on the
top-level name) and the task-axis convention (axis 0) hold for all of them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mtljax import registry
from mtljax.models.encoders import lecun_normal

# Per-task head parameters (on axis 0: T for hidden_*, O columns for out_*).
HEAD_PARAMS = ("hidden_w", "hidden_b", "out_w", "out_b")
# Of these, the ones on the output axis (O columns), not the task axis (T).
OUTPUT_PARAMS = ("out_w", "out_b")


def init_heads(net: nnx.Module, feat: int, num_tasks: int, outputs_per_task,
               head_hidden: int, rngs: nnx.Rngs) -> None:
  """Sets `net`'s per-task heads over `feat` input features.

  Sets num_tasks, head_hidden, output_tasks (the static [O] table of each
  output column's task) and the head parameters.
  """
  net.num_tasks = num_tasks
  net.head_hidden = head_hidden
  outputs_per_task = tuple(outputs_per_task or (1,) * num_tasks)
  if len(outputs_per_task) != num_tasks:
    raise ValueError(f"outputs_per_task has {len(outputs_per_task)} entries "
                     f"for {num_tasks} tasks")
  # A static table (not a variable): which task each output column is.
  net.output_tasks = tuple(int(t) for t in np.repeat(
      np.arange(num_tasks), outputs_per_task))
  num_outputs = len(net.output_tasks)
  # Fan-in = feat for both head weights (the task axis is a batch of heads).
  init = lecun_normal(fan_in_axes=(1,))
  # Per-task heads as stacked weights: head t only ever reads slice t, so T
  # heads of [feat] → 1 are exactly T independent heads, in one matmul.
  if head_hidden > 0:
    net.hidden_w = nnx.Param(init(rngs.params(), (num_tasks, feat, head_hidden)))
    net.hidden_b = nnx.Param(jnp.zeros((num_tasks, head_hidden)))
    feat = head_hidden
  net.out_w = nnx.Param(init(rngs.params(), (num_outputs, feat)))
  net.out_b = nnx.Param(jnp.zeros((num_outputs,)))


def apply_heads(net: nnx.Module, h) -> jax.Array:
  """Per-task heads: features → [B, O] float32 logits.

  Args:
    net: a module set up by init_heads.
    h: [B, F] features that every task reads, or [B, T, F] features of
      each task's own (task t's head reads only h[:, t]).
  """
  columns = np.asarray(net.output_tasks)
  identity = net.output_tasks == tuple(range(net.num_tasks))
  if net.head_hidden > 0:
    eq = "bf,tfh->bth" if h.ndim == 2 else "btf,tfh->bth"
    h = jnp.einsum(eq, h, net.hidden_w[...].astype(h.dtype),
                   preferred_element_type=jnp.float32)
    h = jax.nn.relu(h + net.hidden_b[...])
    if not identity:
      # Each output column reads its own task's hidden layer.
      h = h[:, columns]
    logits = jnp.einsum("bth,th->bt", h, net.out_w[...]) + net.out_b[...]
  elif h.ndim == 2:
    logits = jnp.einsum("bf,tf->bt", h, net.out_w[...].astype(h.dtype),
                        preferred_element_type=jnp.float32) + net.out_b[...]
  else:
    if not identity:
      h = h[:, columns]                                # [B, O, F]
    logits = jnp.einsum("bof,of->bo", h, net.out_w[...].astype(h.dtype),
                        preferred_element_type=jnp.float32) + net.out_b[...]
  return logits.astype(jnp.float32)


def stack(make, n: int, rngs: nnx.Rngs) -> nnx.Module:
  """n independently initialised copies of `make(rngs)`, stacked on axis 0.

  Every variable of the result has a leading axis of n (the Flax
  "scan over layers" form); call it through `over_copies`.
  """
  @nnx.split_rngs(splits=n)
  @nnx.vmap(in_axes=(0,), out_axes=0)
  def build(r):
    return make(r)

  return build(rngs)


def copy_keys(rng, shape):
  """Independent dropout keys for each copy (None stays None)."""
  if rng is None:
    return None
  shape = (shape,) if isinstance(shape, int) else tuple(shape)
  n = int(np.prod(shape))
  return jax.random.split(rng, n).reshape(shape + jnp.shape(rng))


# How over_copies maps a function over stacked copies: "vmap" (one batched
# op per layer), "loop" (n unrolled calls on sliced copies), or "auto": the
# loop for convolutional copies on a CPU, where a vmapped convolution becomes
# a grouped one that XLA:CPU runs several times slower than n plain ones
# (docs/PERFORMANCE.md, "Run map"), and vmap everywhere else.
COPIES_MAP = "auto"


def _loop_copies(module) -> bool:
  if COPIES_MAP not in ("auto", "vmap", "loop"):
    raise ValueError(f"parts.COPIES_MAP={COPIES_MAP!r}: 'auto', 'vmap' or "
                     "'loop'")
  if COPIES_MAP != "auto":
    return COPIES_MAP == "loop"
  return (jax.default_backend() == "cpu"
          and bool(getattr(module, "convolutional", False)))


def over_copies(fn, module, x, rng, n, *, x_axis=None, out_axis=0):
  """Maps `fn(copy, x, key)` over the n stacked copies of `module`.

  Both ways of mapping (COPIES_MAP) compute the same function, up to float
  rounding, and both carry a copy's updated state (BatchNorm statistics)
  back into `module`.

  Args:
    fn: (one copy, its input, its dropout key or None) → output.
    module: a `stack` result.
    x: the input: the same for every copy (x_axis None) or one per copy
      along x_axis.
    rng: one dropout key (split into one per copy) or None.
    n: the number of copies.
    x_axis: x's copy axis, or None.
    out_axis: where the copy axis goes in the output.
  """
  keys = copy_keys(rng, n)
  if not _loop_copies(module):
    return nnx.vmap(fn, in_axes=(0, x_axis, None if keys is None else 0),
                    out_axes=out_axis)(module, x, keys)
  graphdef, state = nnx.split(module)
  outs, states = [], []
  for i in range(n):
    one = nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state))
    x_i = x if x_axis is None else jnp.take(x, i, axis=x_axis)
    outs.append(fn(one, x_i, None if keys is None else keys[i]))
    states.append(nnx.state(one))
  nnx.update(module, jax.tree.map(lambda *a: jnp.stack(a), *states))
  return jax.tree.map(lambda *o: jnp.stack(o, axis=out_axis), *outs)


def mixing_init(num_tasks: int, shape=()) -> jax.Array:
  """T x T matrices close to identity: 0.9 on, 0.1/(T-1) off the diagonal.

  LibMTL's choice for cross-stitch units: each column starts mostly itself,
  and each row sums to 1 (a task's input stays on the scale of a stage's
  output). One task: the identity.
  """
  off = 0.1 / (num_tasks - 1) if num_tasks > 1 else 0.0
  on = 0.9 if num_tasks > 1 else 1.0
  m = np.full((num_tasks, num_tasks), off) + np.eye(num_tasks) * (on - off)
  return jnp.broadcast_to(jnp.asarray(m, jnp.float32),
                          tuple(shape) + (num_tasks, num_tasks))


def make_encoder(encoder: str, image_shape, *, width, depth, dropout, dtype,
                 encoder_kwargs=None):
  """A factory `rngs → encoder` for the configured encoder."""
  cls = registry.ENCODERS.get(encoder)

  def make(rngs):
    return cls(tuple(image_shape), width=width, depth=depth, dropout=dropout,
               dtype=dtype, rngs=rngs, **(encoder_kwargs or {}))

  return make


def require_staged(enc_cls_or_obj, arch: str) -> None:
  """A clear error for an encoder without staged access (a user's)."""
  for attr in ("stage", "finish", "keep_stages"):
    if not hasattr(enc_cls_or_obj, attr):
      raise ValueError(
          f"architecture {arch!r} needs an encoder with staged access "
          f"(stage, finish, keep_stages, as models/encoders.py's); "
          f"{type(enc_cls_or_obj).__name__} has no {attr}")
