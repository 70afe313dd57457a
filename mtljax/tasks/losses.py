"""Masked sigmoid cross-entropy for multi-label, multi-task learning.

The lecture's loss is (1/m) Σ_i Σ_j L(ŷ_j⁽ⁱ⁾, y_j⁽ⁱ⁾) with L the logistic loss, where
the inner sum runs only over labels that are observed (0 or 1, not "?")::

    loss = masked_sigmoid_cross_entropy(logits, labels, mask)            # the lecture's
    loss = masked_sigmoid_cross_entropy(logits, labels, mask, "per_label")
    per_task = masked_sigmoid_cross_entropy_per_task(logits, labels, mask)  # [T]

Why a boolean mask and not NaN labels: the mask says which entries count,
whatever the arrays hold there. Masked-out labels and logits are first replaced
by 0 and the per-label loss is then zeroed again (the "double where"): a single
`where` on the loss zeroes the value, but a NaN or inf under the mask would
still reach the gradient as 0·NaN = NaN. With both, an unobserved entry's value
and gradient are exactly 0 whatever it holds ("?" stored as -1, NaN, inf).

How normalisation changes the effective task weighting (each is a registered
loss weighting, `registry.LOSS_WEIGHTINGS`):
  * "per_example" (the lecture's formula, default): divide the observed sum by the
    batch size B. Tasks with more observed labels weigh more; the loss shrinks
    as labels go missing.
  * "per_label" (chemprop): divide by the number of observed labels.
  * "per_task": average each task over its own observed labels, then average
    over tasks that have at least one observed label; every task weighs equally
    whatever its label count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtljax import registry
from mtljax.tasks import types as types_lib

# The built-in weightings (registry.LOSS_WEIGHTINGS may hold more).
NORMALIZATIONS = ("per_example", "per_label", "per_task")


def _check_inputs(logits, labels, mask) -> None:
  """Raises a ValueError naming the argument for wrong ranks, shapes or dtypes.

  Runs at trace time (shapes and dtypes are static), so a mistake surfaces
  before compilation instead of as a silent broadcast.
  """
  for name, x in (("logits", logits), ("labels", labels), ("mask", mask)):
    if getattr(x, "ndim", None) != 2:
      raise ValueError(
          f"{name} must have rank 2 [batch, tasks]; got shape "
          f"{getattr(x, 'shape', type(x).__name__)}")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(f"logits must be floating point; got dtype {logits.dtype}")
  if mask.dtype != jnp.bool_:
    raise ValueError(f"mask must be bool (False = label is '?'); got dtype "
                     f"{mask.dtype}")
  if not (jnp.issubdtype(labels.dtype, jnp.integer)
          or jnp.issubdtype(labels.dtype, jnp.floating)
          or labels.dtype == jnp.bool_):
    raise ValueError(f"labels must be numeric or bool; got dtype {labels.dtype}")
  if labels.shape != logits.shape:
    raise ValueError(
        f"labels shape {labels.shape} does not match logits shape "
        f"{logits.shape} (batch or number of tasks T differs)")
  if mask.shape != logits.shape:
    raise ValueError(
        f"mask shape {mask.shape} does not match logits shape {logits.shape} "
        "(batch or number of tasks T differs)")


def _check_label_values(labels, mask) -> None:
  """Raises a ValueError at the first observed label that is not 0 or 1.

  Only concrete arrays can be checked: under jit (or any transformation that
  traces labels or mask) the values are unknown, so the check is skipped and
  the data pipeline's own label check is what guards training.
  """
  if isinstance(labels, jax.core.Tracer) or isinstance(mask, jax.core.Tracer):
    return
  labels, mask = np.asarray(labels), np.asarray(mask)
  # NaN fails both comparisons, so it is reported too.
  bad = mask & ~((labels == 0) | (labels == 1))
  if bad.any():
    i, j = np.argwhere(bad)[0]
    raise ValueError(
        f"labels must be 0 or 1 where mask is True; got "
        f"{labels[i, j].item()!r} at example {i}, task {j} ({int(bad.sum())} "
        "such label(s) in all; a '?' label, often stored as -1, needs "
        "mask=False)")


def _masked_elementwise(logits, labels, mask) -> jax.Array:
  """The per-label loss, exactly 0 in value and gradient where mask is False."""
  # Inner `where`s: safe inputs under the mask, so that no NaN/inf there can
  # reach the backward pass. For observed entries they are the identity, so
  # values and gradients there are bit-identical to the single-`where` form.
  safe_logits = jnp.where(mask, logits, jnp.zeros((), logits.dtype))
  safe_labels = jnp.where(mask, labels, jnp.zeros((), labels.dtype))
  return jnp.where(mask, sigmoid_cross_entropy(safe_logits, safe_labels), 0.0)


def sigmoid_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Elementwise logistic loss in log-sigmoid form, stable for any |logit|.

  L(z, y) = -y log σ(z) - (1-y) log(1-σ(z)) = max(z, 0) - z·y + log1p(e^{-|z|}).

  Args:
    logits: float array.
    labels: array of the same shape with values in {0, 1}.

  Returns:
    The per-element loss, same shape and dtype as `logits`.
  """
  labels = labels.astype(logits.dtype)
  return (jnp.maximum(logits, 0) - logits * labels
          + jnp.log1p(jnp.exp(-jnp.abs(logits))))


def masked_sigmoid_cross_entropy_per_task(
    logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Per-task mean logistic loss over observed labels.

  Args:
    logits: [B, T] float logits.
    labels: [B, T] labels in {0, 1} where mask is True; entries under
      mask=False are ignored, whatever they hold (-1, NaN).
    mask: [B, T] bool, False where the label is "?".

  Returns:
    [T] float: each task's loss averaged over its observed labels; exactly 0
    (with zero gradient) for a task with no observed label in the batch, and
    so for every task when the batch is empty (B = 0).

  Raises:
    ValueError: on wrong ranks, shapes or dtypes, or, for concrete (not
      traced) labels and mask, on an observed label that is not 0 or 1.
      Traced values (under jit) cannot be checked; the data pipeline keeps its
      own label check.
  """
  _check_inputs(logits, labels, mask)
  _check_label_values(labels, mask)
  elem = _masked_elementwise(logits, labels, mask)
  count = mask.sum(axis=0).astype(logits.dtype)
  # max(count, 1) keeps an all-"?" task finite: its sum is 0, so is its loss.
  return elem.sum(axis=0) / jnp.maximum(count, 1.0)


def masked_sigmoid_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    normalize: str = "per_example",
) -> jax.Array:
  """Masked multi-label sigmoid cross-entropy (the lecture's loss).

  Args:
    logits: [B, T] float logits, one per task.
    labels: [B, T] labels in {0, 1} where mask is True; entries under
      mask=False are ignored, whatever they hold (-1, NaN).
    mask: [B, T] bool, False where the label is missing ("?").
    normalize: "per_example" (the lecture's (1/B) Σ_i Σ_j observed), "per_label"
      (observed sum / number of observed labels) or "per_task" (mean over tasks
      with ≥1 observed label of each task's mean over its observed labels).

  Returns:
    Scalar loss. Finite, with finite gradients, even when a whole task or the
    whole batch is unobserved, or the batch is empty (B = 0, in every
    normalisation): then the loss is 0 with zero gradient. The value and the
    gradient of an unobserved entry are exactly 0, whatever its label or logit
    holds (NaN and inf included).

  Raises:
    ValueError: on a bad `normalize`, on wrong ranks, shapes or dtypes, or, for
      concrete (not traced) labels and mask, on an observed label that is not
      0 or 1, naming the value and its (example, task) position. Traced values
      (under jit, as in the train step) cannot be checked; the data pipeline
      keeps its own label check.
  """
  if normalize not in registry.LOSS_WEIGHTINGS:
    raise ValueError(f"normalize must be one of "
                     f"{registry.LOSS_WEIGHTINGS.names()}; got {normalize!r}")
  _check_inputs(logits, labels, mask)
  _check_label_values(labels, mask)
  elem = _masked_elementwise(logits, labels, mask)
  return registry.LOSS_WEIGHTINGS.get(normalize)(elem, mask)


# Loss weightings: how the masked per-label losses [B, T] become one scalar.
# Each is `fn(elem, mask) -> scalar`; a new one is a function + one line.


def per_example(elem, mask):
  """The lecture's (1/m) Σ_i Σ_j over observed labels, m the batch size."""
  del mask
  # max(B, 1): an empty batch has sum 0, so its loss is 0, not 0/0.
  return elem.sum() / max(elem.shape[0], 1)


def per_label(elem, mask):
  """The observed sum over the number of observed labels (chemprop)."""
  return elem.sum() / jnp.maximum(mask.sum().astype(elem.dtype), 1.0)


def per_task(elem, mask):
  """Each task's mean over its observed labels, averaged over present tasks."""
  count = mask.sum(axis=0).astype(elem.dtype)
  task_mean = elem.sum(axis=0) / jnp.maximum(count, 1.0)
  present = (count > 0).astype(elem.dtype)
  return (task_mean * present).sum() / jnp.maximum(present.sum(), 1.0)


registry.LOSS_WEIGHTINGS.register("per_example", per_example)
registry.LOSS_WEIGHTINGS.register("per_label", per_label)
registry.LOSS_WEIGHTINGS.register("per_task", per_task)


# ----------------------------------------------------------- typed tasks.
# Tasks of any type: one [B, O] output array (O = Σ num_outputs, task t's
# outputs in columns offsets[t]:offsets[t + 1]), labels [B, T] (class index
# or value), mask [B, T]. Each type's elementwise loss gives one [B, T] array
# of per-label losses, and the same weightings as above make it a scalar.


def _plan(tasks) -> tuple[list, np.ndarray | None]:
  """Static groups of tasks computed together: [(kind, task idx, cols)].

  Binary tasks form one group, multiclass tasks one group per K, regression
  tasks one per (loss, delta): each group is a few fused ops whatever T is.
  Returns the groups and the permutation that puts their concatenated
  columns back in task order (None when they already are).
  """
  offsets = types_lib.output_offsets(tasks)
  keyed = {}
  for t, task in enumerate(tasks):
    if task.type == "binary":
      key = ("binary",)
    elif task.type == "multiclass":
      key = ("multiclass", task.num_classes)
    elif task.type == "regression":
      key = ("regression", task.loss, float(task.delta))
    else:
      raise ValueError(f"task {task.name!r}: no loss for task type "
                       f"{task.type!r}")
    keyed.setdefault(key, []).append(t)
  groups = []
  for key, idx in keyed.items():
    idx = np.array(idx)
    width = key[1] if key[0] == "multiclass" else 1
    cols = (offsets[idx][:, None] + np.arange(width)).reshape(-1)
    groups.append((key, idx, cols))
  order = np.concatenate([idx for _, idx, _ in groups])
  inverse = None if np.array_equal(order, np.arange(len(tasks))) else (
      np.argsort(order))
  return groups, inverse


def _take(x, cols):
  """x[:, cols], as a plain slice when cols is contiguous (most datasets)."""
  if np.array_equal(cols, np.arange(cols[0], cols[0] + len(cols))):
    return x[:, int(cols[0]):int(cols[0]) + len(cols)]
  return x[:, cols]


def _group_elementwise(key, z, y, m):
  """[B, n] per-label losses of one group, exactly 0 (value, grad) off mask."""
  kind = key[0]
  if kind == "binary":
    return _masked_elementwise(z, y, m)
  if kind == "multiclass":
    k = key[1]
    z = z.reshape(z.shape[0], -1, k)                      # [B, n, K]
    safe_z = jnp.where(m[..., None], z, jnp.zeros((), z.dtype))
    safe_y = jnp.where(m, y, 0).astype(jnp.int32)
    log_p = jax.nn.log_softmax(safe_z, axis=-1)
    picked = jnp.take_along_axis(log_p, safe_y[..., None], axis=-1)[..., 0]
    return jnp.where(m, -picked, 0.0)
  _, loss, delta = key
  safe_z = jnp.where(m, z, jnp.zeros((), z.dtype))
  safe_y = jnp.where(m, y, jnp.zeros((), y.dtype)).astype(z.dtype)
  r = safe_z - safe_y
  if loss == "mse":
    elem = jnp.square(r)
  elif loss == "l1":
    elem = jnp.abs(r)
  else:  # huber: quadratic within delta, linear beyond (optax.huber_loss).
    a = jnp.abs(r)
    quad = jnp.minimum(a, delta)
    elem = 0.5 * jnp.square(quad) + delta * (a - quad)
  return jnp.where(m, elem, 0.0)


def _check_typed_labels(tasks, labels, mask) -> None:
  """Concrete inputs only: an observed label must be valid for its task."""
  if isinstance(labels, jax.core.Tracer) or isinstance(mask, jax.core.Tracer):
    return
  labels = np.asarray(labels, np.float64)
  mask = np.asarray(mask)
  missing = np.array([np.nan if t.type == "regression" else -1.0
                      for t in tasks])
  shown = np.where(mask, labels, missing)
  try:
    types_lib.check_labels(tasks, shown, "where mask is True")
  except ValueError as e:
    raise ValueError(f"{e} (a '?' label needs mask=False)") from None
  # observed() treats NaN and negatives as "?": under mask=True they are bad.
  bad = mask & ~types_lib.observed(tasks, labels)
  if bad.any():
    i, j = map(int, np.argwhere(bad)[0])
    raise ValueError(f"label value {float(labels[i, j]):g} of task "
                     f"{tasks[j].name!r} at example {i} is '?' but mask is "
                     "True")


def task_elementwise(outputs: jax.Array, labels: jax.Array, mask: jax.Array,
                     tasks) -> jax.Array:
  """[B, T] per-label losses of typed tasks; exactly 0 where mask is False.

  Args:
    outputs: [B, O] float head outputs (logits for classification tasks,
      predictions for regression), O = Σ_t tasks[t].num_outputs.
    labels: [B, T] float: 0/1 (binary), class index (multiclass), value
      (regression). Entries under mask=False are ignored, whatever they hold.
    mask: [B, T] bool, False where the label is "?".
    tasks: the T `mtljax.tasks.Task`s.

  Returns:
    [B, T]: sigmoid cross-entropy, softmax cross-entropy, or squared error
    (Huber, absolute error) per label. The value and the gradient of an
    unobserved entry are exactly 0, whatever its label or outputs hold.
  """
  tasks = tuple(tasks)
  num_outputs = sum(t.num_outputs for t in tasks)
  for name, x, cols in (("outputs", outputs, num_outputs),
                        ("labels", labels, len(tasks)),
                        ("mask", mask, len(tasks))):
    if getattr(x, "ndim", None) != 2 or x.shape[1] != cols:
      raise ValueError(f"{name} must have shape [batch, {cols}] for tasks "
                       f"{[t.name for t in tasks]}; got "
                       f"{getattr(x, 'shape', type(x).__name__)}")
  if mask.dtype != jnp.bool_:
    raise ValueError(f"mask must be bool (False = label is '?'); got dtype "
                     f"{mask.dtype}")
  if not (labels.shape[0] == outputs.shape[0] == mask.shape[0]):
    raise ValueError(f"batch sizes differ: outputs {outputs.shape}, labels "
                     f"{labels.shape}, mask {mask.shape}")
  _check_typed_labels(tasks, labels, mask)
  if all(t.type == "binary" for t in tasks):
    # The lecture's case, computed exactly as by masked_sigmoid_cross_entropy.
    return _masked_elementwise(outputs, labels, mask)
  groups, inverse = _plan(tasks)
  parts = [_group_elementwise(key, _take(outputs, cols), _take(labels, idx),
                              _take(mask, idx))
           for key, idx, cols in groups]
  elem = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)
  return elem if inverse is None else elem[:, inverse]


def task_losses(outputs, labels, mask, tasks, normalize: str = "per_example"):
  """Scalar loss and per-task losses of typed tasks (see task_elementwise).

  Returns:
    (loss, per_task): the weighting `normalize` of the per-label losses, and
    [T] each task's mean over its observed labels (0 for none).
  """
  if normalize not in registry.LOSS_WEIGHTINGS:
    raise ValueError(f"normalize must be one of "
                     f"{registry.LOSS_WEIGHTINGS.names()}; got {normalize!r}")
  elem = task_elementwise(outputs, labels, mask, tasks)
  count = mask.sum(axis=0).astype(elem.dtype)
  per_task = elem.sum(axis=0) / jnp.maximum(count, 1.0)
  return registry.LOSS_WEIGHTINGS.get(normalize)(elem, mask), per_task
