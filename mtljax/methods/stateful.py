"""The stateful gradient aggregators: GradVac and GradNorm.

Each is a `base.Aggregator` (optax-style init/update over pytrees), so the
train step maps it over runs like the optimizer; floating-point
hyperparameters (beta, alpha, w_lr) may be traced per-run values. Both
honour the present-task `mask`: an absent task neither adjusts nor is
adjusted, and keeps its state as it is.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtljax import registry
from mtljax.methods import base
from mtljax.methods import gramian as gm


def _safe_div(num, den):
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1), 0)


def _orders(key, t):
  """[T, T]: row i is task i's visiting order (a permutation; fixed if None)."""
  if key is None:
    return jnp.broadcast_to(jnp.arange(t), (t, t))
  keys = jax.random.split(key, t)
  return jax.vmap(lambda k: jax.random.permutation(k, t))(keys)


# ---------------------------------------------------------------- GradVac


@gm.jit
def gradvac_adjusted(grads, targets, key=None, mask=None, beta=0.5,
                     ema_if_adjusted=False):
  """GradVac's adjusted per-task gradients and the new EMA targets.

  Args:
    grads: [T, P] task gradients.
    targets: [T, T] EMA cosine targets phi_hat (from the previous step).
    key: PRNG key of the visiting orders (None: 0, 1, ..., T-1).
    mask: [T] bool of the present tasks (None: all).
    beta: the EMA rate.
    ema_if_adjusted: update phi_hat_ij only when the pair was adjusted
      (LibMTL's code) instead of at every visit (the paper's Algorithm 1).

  Returns:
    (adjusted [T, P], new targets [T, T]).
  """
  t = grads.shape[0]
  m = gm.present(mask, t)
  grads = gm.mask_rows(jnp.asarray(grads), m)
  targets = jnp.asarray(targets, grads.dtype)
  order = _orders(key, t)
  norms = jnp.sqrt(jnp.sum(grads * grads, axis=1))          # [T]
  rows = jnp.arange(t)

  def body(k, carry):
    pc, tgt = carry
    j = order[:, k]                                         # [T] partner of i
    gj = grads[j]
    nj = norms[j]
    ni = jnp.sqrt(jnp.sum(pc * pc, axis=1))
    visit = (j != rows) & m & m[j]
    # Exact cosines (LibMTL adds 1e-8 to the denominators, which is not
    # scale free); a zero gradient has cosine 0 and gets no adjustment.
    phi = jnp.clip(_safe_div(jnp.sum(pc * gj, axis=1), ni * nj), -1, 1)
    ph = tgt[rows, j]
    adjust = visit & (phi < ph)
    s_phi = jnp.sqrt(jnp.maximum(1 - phi * phi, 0))
    s_ph = jnp.sqrt(jnp.maximum(1 - ph * ph, 0))
    # The weight of g_j that makes cos(g_i', g_j) exactly phi_hat.
    w = _safe_div(ni * (ph * s_phi - phi * s_ph), nj * s_ph)
    pc = pc + jnp.where(adjust, w, 0)[:, None] * gj
    ema = jnp.where(ema_if_adjusted, adjust, visit)
    tgt = tgt.at[rows, j].set(jnp.where(ema, (1 - beta) * ph + beta * phi,
                                        ph))
    return pc, tgt

  return jax.lax.fori_loop(0, t, body, (grads, targets))


def _gradvac_init(num_tasks: int):
  return jnp.zeros((num_tasks, num_tasks), jnp.float32)


def _gradvac_update(grads, state, *, losses=None, mask=None, step=None,
                    key=None, lr=None, beta: float = 0.5,
                    ema_if_adjusted: bool = False):
  """GradVac, "Gradient Vaccine" (Wang et al., ICLR 2021), whole model.

  The state phi_hat [T, T] holds EMA targets of the pairwise cosines (init
  0). For each task i, for the other present tasks j in a random order
  (from `key`, one permutation per task as PCGrad): phi_ij = cos(g_i',
  g_j); if phi_ij < phi_hat_ij, g_i' += w g_j with
  w = ||g_i'|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2)) /
  (||g_j|| sqrt(1 - phi_hat^2)), which sets cos(g_i', g_j) = phi_hat_ij;
  then phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi_ij (every visit, as
  the paper's Algorithm 1; `ema_if_adjusted=True`: only when adjusted, as
  LibMTL's code, under which phi_hat can never rise above 0). The
  direction is sum_i g_i' (SUM scale, as LibMTL). With phi_hat = 0 this is
  PCGrad. LibMTL's GradVac_group_type 0 (one group: the whole model).

  Args:
    beta: the EMA rate (LibMTL's default 0.5; the paper uses 1e-2).
    ema_if_adjusted: LibMTL's EMA rule instead of the paper's (may be traced).
  """
  del losses, step, lr
  pc, targets = gradvac_adjusted(grads, state, key, mask, beta,
                                 ema_if_adjusted)
  return jnp.sum(pc, axis=0), targets.astype(state.dtype)


gradvac = base.Aggregator(_gradvac_init, _gradvac_update, "sum")
registry.AGGREGATORS.register("gradvac", gradvac)


# --------------------------------------------------------------- GradNorm


class GradNormState(NamedTuple):
  """weights [T] (init 1); initial_losses [T] (L_t(0), recorded at the
  first step task t is present); seen [T] bool (that step happened)."""
  weights: jax.Array
  initial_losses: jax.Array
  seen: jax.Array


def _gradnorm_init(num_tasks: int) -> GradNormState:
  return GradNormState(jnp.ones((num_tasks,), jnp.float32),
                       jnp.zeros((num_tasks,), jnp.float32),
                       jnp.zeros((num_tasks,), bool))


@gm.jit
def gradnorm_step(grads, losses, state, mask=None, alpha=1.5, w_lr=0.025):
  """One GradNorm update: (direction [P], new state) (see `_gradnorm_update`)."""
  t = grads.shape[0]
  m = gm.present(mask, t)
  grads = gm.mask_rows(jnp.asarray(grads), m)
  dtype = state.weights.dtype
  losses = jnp.where(m, jnp.asarray(losses, dtype), 1)
  first = m & ~state.seen
  l0 = jnp.where(first, losses, state.initial_losses)
  seen = state.seen | m
  n = jnp.maximum(jnp.sum(m), 1).astype(dtype)
  w = jnp.where(m, state.weights, 0)
  nrm = jnp.sqrt(jnp.sum(grads * grads, axis=1)).astype(dtype)
  big_g = w * nrm                              # ||w_t g_t|| (w_t >= 0)
  ratio = jnp.where(m, _safe_div(losses, l0), 0)   # inverse training rate
  r = _safe_div(ratio, jnp.sum(ratio) / n)
  target = jax.lax.stop_gradient(jnp.sum(big_g) / n * r ** alpha)

  def gn_loss(v):
    return jnp.sum(jnp.where(m, jnp.abs(v * nrm - target), 0))

  new = jnp.maximum(w - w_lr * jax.grad(gn_loss)(w), 0)
  tot = jnp.sum(jnp.where(m, new, 0))
  # Renormalise so the present weights sum to T' (all 1 if they all hit 0).
  new = jnp.where(tot > 0, new * _safe_div(n, tot), 1.0)
  weights = jnp.where(m, new, state.weights)
  direction = w.astype(grads.dtype) @ grads    # the weights BEFORE the step
  return direction, GradNormState(weights, l0, seen)


def _gradnorm_update(grads, state, *, losses=None, mask=None, step=None,
                     key=None, lr=None, alpha: float = 1.5,
                     w_lr: float | None = None):
  """GradNorm (Chen et al., ICML 2018) on the given shared gradients.

  With G_t = ||w_t g_t||, the inverse training rate Ltilde_t = L_t / L_t(0)
  and r_t = Ltilde_t / mean(Ltilde) (over present tasks), the GradNorm
  loss sum_t |G_t - mean(G) r_t^alpha| (target held constant) takes one
  plain gradient step on w (rate `w_lr`), w is clipped at 0 and rescaled
  so that the present weights sum to T'. The direction is sum_t w_t g_t
  with the weights BEFORE the step (as the paper's Algorithm 1 and LibMTL,
  whose loss uses the weights computed before its optimizer steps): SUM
  scale. L_t(0) is task t's loss at the first step it is present.

  Deviations from LibMTL: w itself is the parameter (the paper; LibMTL
  uses w = T softmax(theta)), stepped by plain SGD (LibMTL steps theta with
  the model's optimizer), and GradNorm acts from the first step (LibMTL
  uses equal weights during epoch 0 and takes L_t(0) as that epoch's mean
  loss).

  Args:
    losses: [T] the task losses (required).
    alpha: the restoring force (LibMTL's and the paper's default 1.5).
    w_lr: the weights' learning rate; None: the step's `lr` (LibMTL steps
      the weights with the model's optimizer and learning rate).
  """
  del step, key
  if losses is None:
    raise ValueError("GradNorm needs the task losses (losses=)")
  if w_lr is None:
    w_lr = lr
  if w_lr is None:
    raise ValueError("GradNorm needs w_lr= (or the step's lr=)")
  return gradnorm_step(grads, losses, state, mask, alpha, w_lr)


gradnorm = base.Aggregator(_gradnorm_init, _gradnorm_update, "sum")
registry.AGGREGATORS.register("gradnorm", gradnorm)

__all__ = ["gradvac", "gradvac_adjusted", "gradnorm", "gradnorm_step",
           "GradNormState"]
