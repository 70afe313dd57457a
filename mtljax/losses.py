"""Masked sigmoid cross-entropy for multi-label, multi-task learning.

The seed's loss is (1/m) Σ_i Σ_j L(ŷ_j⁽ⁱ⁾, y_j⁽ⁱ⁾) with L the logistic loss, where
the inner sum runs only over labels that are observed (0 or 1, not "?")::

    loss = masked_sigmoid_cross_entropy(logits, labels, mask)            # seed's
    loss = masked_sigmoid_cross_entropy(logits, labels, mask, "per_label")
    per_task = masked_sigmoid_cross_entropy_per_task(logits, labels, mask)  # [T]

Why a boolean mask and not NaN labels: `jnp.where(mask, ...)` on the *per-label
loss* keeps both the value and the gradient of an unobserved entry exactly 0.
(A NaN label would need a double `where` to keep the gradient finite.)

How normalisation changes the effective task weighting (see REFERENCES.md):
  * "per_example" (the seed's formula, default): divide the observed sum by the
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
    labels: [B, T] labels in {0, 1} (values under mask=False are ignored).
    mask: [B, T] bool, False where the label is "?".

  Returns:
    [T] float: each task's loss averaged over its observed labels; exactly 0
    (with zero gradient) for a task with no observed label in the batch.
  """
  _check_inputs(logits, labels, mask)
  elem = jnp.where(mask, sigmoid_cross_entropy(logits, labels), 0.0)
  count = mask.sum(axis=0).astype(logits.dtype)
  # max(count, 1) keeps an all-"?" task finite: its sum is 0, so is its loss.
  return elem.sum(axis=0) / jnp.maximum(count, 1.0)


def masked_sigmoid_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    normalize: str = "per_example",
) -> jax.Array:
  """Masked multi-label sigmoid cross-entropy (the seed's loss).

  Args:
    logits: [B, T] float logits, one per task.
    labels: [B, T] labels in {0, 1}; entries under mask=False are ignored.
    mask: [B, T] bool, False where the label is missing ("?").
    normalize: "per_example" (seed's (1/B) Σ_i Σ_j observed), "per_label"
      (observed sum / number of observed labels) or "per_task" (mean over tasks
      with ≥1 observed label of each task's mean over its observed labels).

  Returns:
    Scalar loss. Finite, with finite gradients, even when a whole task or the
    whole batch is unobserved (then the loss is 0). The gradient with respect to
    an unobserved logit is exactly 0.

  Raises:
    ValueError: on a bad `normalize` or on wrong ranks, shapes or dtypes.
  """
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"normalize must be one of {NORMALIZATIONS}; got "
                     f"{normalize!r}")
  _check_inputs(logits, labels, mask)
  elem = jnp.where(mask, sigmoid_cross_entropy(logits, labels), 0.0)
  total = elem.sum()
  if normalize == "per_example":
    return total / logits.shape[0]
  if normalize == "per_label":
    return total / jnp.maximum(mask.sum().astype(logits.dtype), 1.0)
  count = mask.sum(axis=0).astype(logits.dtype)
  per_task = elem.sum(axis=0) / jnp.maximum(count, 1.0)
  present = (count > 0).astype(logits.dtype)
  return (per_task * present).sum() / jnp.maximum(present.sum(), 1.0)
