"""Loss weightings as optax-style init/update pairs (see `base.Weighting`).

Each returns per-task weights w [T] (0 for absent tasks); the step takes one
backward pass of sum_t stop_gradient(w_t) * loss_t, where loss_t is task t's
term under `loss.normalize` times `loss.task_weights`.

Registered: "static" (1 per present task), "target" (a fixed share for one
target task), "uw" (Kendall et al. 2018),
"imtl_l" (Liu et al. 2021), "dwa" (Liu et al. 2019), "rlw" (Lin et al.
2022), "gls" (Chennupati et al. 2019) and "famo" (Liu et al. 2023; the only
one with an `after`). Each docstring gives the formula, the hyperparameters
and the scale of the weights.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtljax import registry
from mtljax.methods import base


def _static_update(losses, state, *, mask, step=None, key=None, lr=None):
  """Weights 1 on present tasks: the loss is sum_t loss_t (today's loss)."""
  del step, key, lr
  return jnp.where(mask, 1.0, 0.0).astype(losses.dtype), state


# "static": loss.normalize's terms times loss.task_weights, unchanged (the
# default; its step is the classic single backward pass).
static = base.Weighting(lambda t: (), _static_update)
registry.WEIGHTINGS.register("static", static)



def _target_update(losses, state, *, mask, step=None, key=None, lr=None,
                   task=0.0, share=0.5):
  """Target weighting, for auxiliary learning: one task is the target and
  the others only help it. The target (index `task`) gets the share `share`
  of the weights and the other present tasks split the rest equally:
  w_target = share * T', w_aux = (1 - share) * T' / (T' - 1). Scale: the T'
  present weights sum to T', as with "static"; with the target absent or
  alone, every present task weighs 1. Why a share and not a ratio: at a
  50:1 label ratio the summed loss gives the target ~1% of the loss; the
  share says what it gets instead, whatever T is. Both hyperparameters are
  per-run values (`task` is rounded to the nearest index; one outside
  0..T-1 picks no target, so every task weighs 1).

  The share holds in the batches that hold a target label. In the others
  every auxiliary task weighs 1 (with a 100-label target among 3,200
  examples and batch 32, about 36% of batches), so the target's share of
  the weights over a run is below `share`.
  """
  del step, key, lr
  mask = jnp.asarray(mask, bool)
  idx = jnp.round(jnp.asarray(task, jnp.float32)).astype(jnp.int32)
  is_target = jnp.arange(losses.shape[-1]) == idx
  n = jnp.sum(mask).astype(jnp.float32)
  has_target = jnp.any(is_target & mask)
  n_aux = n - has_target.astype(jnp.float32)
  both = has_target & (n_aux > 0)
  share = jnp.asarray(share, jnp.float32)
  w = jnp.where(is_target, jnp.where(both, share * n, 1.0),
                jnp.where(both, (1.0 - share) * n / jnp.maximum(n_aux, 1.0),
                          1.0))
  return _weights(w, mask, losses), state


target = base.Weighting(lambda t: (), _target_update)
registry.WEIGHTINGS.register("target", target)

# --- UW, DWA, RLW, GLS, IMTL-L, FAMO ----------------------------------------
# Shared conventions: an absent task's loss is replaced by a neutral value
# with `jnp.where` before any arithmetic (so a NaN there never reaches the
# weights or the state), every normalisation (softmax, mean, T') runs over
# the present tasks only, and a learned parameter of an absent task keeps
# its value and its Adam moments. Each Adam step counts its steps per task,
# so a task's bias correction sees only the steps it was present in (with
# every task present this is ordinary Adam).


class AdamState(NamedTuple):
  """A learned [T] parameter with its per-task Adam moments and step counts."""
  param: jnp.ndarray   # [T] float32
  mu: jnp.ndarray      # [T] first moment
  nu: jnp.ndarray      # [T] second moment
  count: jnp.ndarray   # [T] int32, steps taken while present


def _adam_init(num_tasks: int) -> AdamState:
  z = jnp.zeros((num_tasks,), jnp.float32)
  return AdamState(z, z, z, jnp.zeros((num_tasks,), jnp.int32))


def _adam_step(st: AdamState, grad, mask, lr, weight_decay=0.0,
               b1=0.9, b2=0.999, eps=1e-8) -> AdamState:
  """One step of torch.optim.Adam (L2 weight decay added to the gradient,
  eps outside the bias-corrected sqrt) on the present coordinates only."""
  grad = jnp.where(mask, grad, 0.0) + weight_decay * st.param
  mu = b1 * st.mu + (1 - b1) * grad
  nu = b2 * st.nu + (1 - b2) * grad * grad
  count = st.count + 1
  t = count.astype(jnp.float32)
  bc1 = 1 - b1 ** t
  bc2 = 1 - b2 ** t
  new = st.param - (lr / bc1) * mu / (jnp.sqrt(nu) / jnp.sqrt(bc2) + eps)
  keep = lambda a, b: jnp.where(mask, a, b)
  return AdamState(keep(new, st.param), keep(mu, st.mu), keep(nu, st.nu),
                   keep(count, st.count))


def _masked_softmax(x, mask):
  """softmax over the present entries, 0 elsewhere (all zeros if none)."""
  x = jnp.where(mask, x, 0.0)
  top = jnp.max(jnp.where(mask, x, -jnp.inf))
  top = jnp.where(jnp.any(mask), top, 0.0)
  e = jnp.where(mask, jnp.exp(x - top), 0.0)
  s = jnp.sum(e)
  return e / jnp.where(s > 0, s, 1.0)


def _present(losses, mask, fill=0.0):
  """The losses with absent entries replaced by `fill` (float32)."""
  return jnp.where(mask, losses.astype(jnp.float32), fill)


def _weights(w, mask, losses):
  return jnp.where(mask, w, 0.0).astype(losses.dtype)


def _own_lr(own, lr):
  """A method's own learning rate `own`, or the run's `lr` where own <= 0
  (lr None: `own` alone)."""
  own = jnp.asarray(own, jnp.float32)
  if lr is None:
    return jnp.maximum(own, 0.0)
  return jnp.where(own > 0, own, jnp.asarray(lr, jnp.float32))


# --------------------------------------------------------------------- UW

# |s| <= 50 keeps exp(+-s) finite in float32 (a loss that stays exactly 0
# has its optimum at s = -+inf); no loss in [e^-50, e^50] ever meets it.
_S_MAX = 50.0


def _scale_step(st, grad, mask, lr):
  st = _adam_step(st, grad, mask, lr)
  return st._replace(param=jnp.clip(st.param, -_S_MAX, _S_MAX))


def _uw_update(losses, state, *, mask, step=None, key=None, lr=None,
               s_lr=0.0):
  """Uncertainty weighting, "Multi-Task Learning Using Uncertainty to Weigh
  Losses for Scene Geometry and Semantics" (Kendall, Gal & Cipolla, CVPR
  2018): the loss is sum_t exp(-s_t) L_t + s_t with learned log-variances
  s = log sigma^2 (init 0), so the weights are w_t = exp(-s_t) (free scale;
  1 at init). Each update returns the weights at the current s, then takes
  one Adam step on s of that objective, gradient 1 - exp(-s_t) L_t, for the
  present tasks (the joint step of LibMTL, where s is a model parameter). At
  a constant L_t, s converges to log L_t (weights 1 / L_t). L_t = 0 drives
  s_t down by at most the Adam step size per update, and |s| <= 50 (never
  an inf weight or a NaN).

  LibMTL's code (weighting/UW.py) writes this objective halved,
  sum_t L_t / (2 exp(s_t)) + s_t / 2, from s = -0.5: the same optimum and,
  under Adam (up to its eps), the same path of s from a given start, with
  half the weights.

  Args:
    s_lr: the Adam learning rate of s; 0 (default) uses the run's `lr`, as
      LibMTL (s is trained by the model's optimizer). A per-run value.
  """
  del step, key
  mask = jnp.asarray(mask, bool)
  st = state
  w = jnp.exp(-st.param)
  l = _present(losses, mask)
  state = _scale_step(st, 1 - w * l, mask, _own_lr(s_lr, lr))
  return _weights(w, mask, losses), state


uw = base.Weighting(_adam_init, _uw_update)
registry.WEIGHTINGS.register("uw", uw)


# ----------------------------------------------------------------- IMTL-L


def _imtl_l_update(losses, state, *, mask, step=None, key=None, lr=None,
                   s_lr=0.0):
  """IMTL-L, the loss balance of "Towards Impartial Multi-task Learning"
  (Liu et al., ICLR 2021): the loss is sum_t exp(s_t) L_t - s_t with learned
  scales s (init 0), so the weights are w_t = exp(s_t) (free scale; 1 at
  init). Each update returns the weights at the current s, then takes one
  Adam step on s, gradient exp(s_t) L_t - 1, for the present tasks. At a
  constant L_t, s converges to -log L_t: every scaled loss exp(s_t) L_t
  equals 1 (the paper's impartiality of the losses). L_t = 0 drives s_t up
  by at most the Adam step size per update, and |s| <= 50.

  Args:
    s_lr: the Adam learning rate of s; 0 (default) uses the run's `lr`
      (LibMTL trains s with the model's optimizer). A per-run value.
  """
  del step, key
  mask = jnp.asarray(mask, bool)
  st = state
  w = jnp.exp(st.param)
  l = _present(losses, mask)
  state = _scale_step(st, w * l - 1, mask, _own_lr(s_lr, lr))
  return _weights(w, mask, losses), state


imtl_l = base.Weighting(_adam_init, _imtl_l_update)
registry.WEIGHTINGS.register("imtl_l", imtl_l)


# -------------------------------------------------------------------- DWA


class DWAState(NamedTuple):
  """Running window sums and the last two completed window means, per task."""
  total: jnp.ndarray    # [T] sum of the present losses in the open window
  seen: jnp.ndarray     # [T] int32, steps present in the open window
  last: jnp.ndarray     # [T] Lbar(k-1), the last completed window's mean
  before: jnp.ndarray   # [T] Lbar(k-2)
  windows: jnp.ndarray  # [T] int32, completed windows with the task (<= 2)
  steps: jnp.ndarray    # [] int32, updates so far


def _dwa_init(num_tasks: int) -> DWAState:
  z = jnp.zeros((num_tasks,), jnp.float32)
  zi = jnp.zeros((num_tasks,), jnp.int32)
  return DWAState(z, zi, z, z, zi, jnp.zeros((), jnp.int32))


def _dwa_update(losses, state, *, mask, step=None, key=None, lr=None,
                temperature=2.0, period=100):
  """Dynamic Weight Average, "End-to-End Multi-Task Learning with Attention"
  (Liu, Johns & Davison, CVPR 2019, Eq. 7):
  w_t = T' exp(r_t / temperature) / sum_{present j} exp(r_j / temperature),
  r_t = Lbar_t(k-1) / Lbar_t(k-2), where Lbar_t(k) is task t's mean loss in
  window k. The paper's windows are epochs; here they are `period`
  consecutive updates, counted in the state. Scale: the weights of the T'
  present tasks sum to T'.

  A task's window mean is over the steps it was present in; a window in
  which it was never present is skipped (its last two means are kept). A
  task without two completed windows has r_t = 1, so w = 1 until two
  windows exist (as the paper's first two epochs). Lbar_t(k-2) = 0 also
  gives r_t = 1 (no NaN for zero losses). The weights of window k use the
  completed windows only, never the current step's losses.

  Args:
    temperature: the softmax temperature (paper: 2.0). A per-run value.
    period: updates per window (static int; default 100).
  """
  del step, key, lr
  mask = jnp.asarray(mask, bool)
  period = operator.index(period)   # static: it shapes the window logic
  if period < 1:
    raise ValueError(f"dwa: period must be a positive int; got {period}")
  st = state
  ready = (st.windows >= 2) & (st.before > 0)
  r = jnp.where(ready, st.last / jnp.where(ready, st.before, 1.0), 1.0)
  n_present = jnp.sum(mask).astype(jnp.float32)
  w = n_present * _masked_softmax(r / temperature, mask)

  total = st.total + _present(losses, mask)
  seen = st.seen + mask.astype(jnp.int32)
  steps = st.steps + 1
  close = steps % period == 0
  roll = close & (seen > 0)
  mean = total / jnp.maximum(seen, 1).astype(jnp.float32)
  state = DWAState(
      total=jnp.where(close, 0.0, total),
      seen=jnp.where(close, 0, seen),
      last=jnp.where(roll, mean, st.last),
      before=jnp.where(roll, st.last, st.before),
      windows=jnp.where(roll, jnp.minimum(st.windows + 1, 2), st.windows),
      steps=steps)
  return _weights(w, mask, losses), state


dwa = base.Weighting(_dwa_init, _dwa_update)
registry.WEIGHTINGS.register("dwa", dwa)


# -------------------------------------------------------------------- RLW


def _rlw_update(losses, state, *, mask, step=None, key=None, lr=None):
  """Random Loss Weighting, "Reasonable Effectiveness of Random Weighting: A
  Litmus Test for Multi-Task Learning" (Lin et al., TMLR 2022), as LibMTL
  (F.softmax(torch.randn(T))): w = softmax(z) over the present tasks with
  z ~ N(0, I) drawn from `key` (one draw per task; the absent tasks' draws
  are discarded). Scale: the present weights sum to 1. No hyperparameters.
  """
  del step, lr
  mask = jnp.asarray(mask, bool)
  if key is None:
    raise ValueError("rlw is random: update needs a PRNG `key`")
  z = jax.random.normal(key, losses.shape, jnp.float32)
  return _weights(_masked_softmax(z, mask), mask, losses), state


rlw = base.Weighting(lambda t: (), _rlw_update)
registry.WEIGHTINGS.register("rlw", rlw)


# -------------------------------------------------------------------- GLS

_GLS_EPS = 1e-8


def _gls_update(losses, state, *, mask, step=None, key=None, lr=None):
  """Geometric Loss Strategy, "MultiNet++: Multi-Stream Feature Aggregation
  and Geometric Loss Strategy for Multi-Task Learning" (Chennupati et al.,
  CVPRW 2019): the loss is the geometric mean GM = (prod_present L_t)^(1/T').
  As weights, w_t = GM / (T' L_t) (= dGM/dL_t), so that one backward pass of
  sum_t w_t L_t has exactly the gradient of GM. Computed in log space
  (w_t = exp(mean_present log L - log L_t) / T'), so products never
  overflow. L_t is clamped to >= 1e-8 first: a zero loss, whose true
  derivative is infinite or undefined, gets a large finite weight.
  Scale: free (sum_t w_t L_t = GM; equal losses give w = 1/T', sum 1).
  No hyperparameters.
  """
  del step, key, lr
  mask = jnp.asarray(mask, bool)
  logl = jnp.log(jnp.maximum(_present(losses, mask, 1.0), _GLS_EPS))
  n = jnp.sum(mask).astype(jnp.float32)
  mean_log = jnp.sum(jnp.where(mask, logl, 0.0)) / jnp.maximum(n, 1.0)
  w = jnp.exp(mean_log - logl) / jnp.maximum(n, 1.0)
  return _weights(w, mask, losses), state


gls = base.Weighting(lambda t: (), _gls_update)
registry.WEIGHTINGS.register("gls", gls)


# ------------------------------------------------------------------- FAMO

_FAMO_EPS = 1e-8   # the official code's D = L - min_losses + 1e-8


class FAMOState(NamedTuple):
  """FAMO's task logits with their Adam state, min losses and last losses."""
  logits: AdamState       # w [T] (init 0) and its Adam moments
  min_losses: jnp.ndarray  # [T] (0, as the official code unless set)
  prev: jnp.ndarray       # [T] the losses of the last update (0 if absent)


def _famo_init(num_tasks: int) -> FAMOState:
  z = jnp.zeros((num_tasks,), jnp.float32)
  return FAMOState(_adam_init(num_tasks), z, z)


def _famo_log_d(losses, state, mask):
  # max() only guards losses below min_losses (a NaN in the official code).
  d = jnp.maximum(_present(losses, mask) - state.min_losses + _FAMO_EPS,
                  _FAMO_EPS)
  return jnp.log(d)


def _famo_update(losses, state, *, mask, step=None, key=None, lr=None,
                 w_lr=0.025, gamma=0.01):
  """FAMO, "FAMO: Fast Adaptive Multitask Optimization" (Liu et al.,
  NeurIPS 2023), ported from the official code (Cranial-XIX/FAMO, famo.py).

  With z = softmax(w) over the present tasks, D_t = L_t - min_t + 1e-8 and
  c = sum_t z_t / D_t, the official loss is sum_t (z_t / c) log D_t; its
  gradient is that of sum_t w_t L_t with the weights w_t = z_t / (c D_t),
  which sum to 1 over the present tasks. After the parameter update,
  `after` takes the losses on the same batch and one Adam step on w (lr
  w_lr, torch L2 weight decay gamma) with the gradient
  J_softmax(w)^T delta, delta_t = log D_t(before) - log D_t(after). O(1) in
  T: FAMO only ever sees the [T] losses, never a gradient per task.

  The official code's clipping of the shared gradient (max_norm = 1) is the
  optimizer's business here (config.optimizer.grad_clip_norm).

  Args:
    w_lr: the Adam learning rate of the logits (official: 0.025).
    gamma: the logits' weight decay (official famo.py and experiments: 0.01;
      methods/weight_methods.py's own default is 1e-5). Both per-run values.
  """
  del step, key, lr, w_lr, gamma
  mask = jnp.asarray(mask, bool)
  z = _masked_softmax(state.logits.param, mask)
  inv_d = jnp.where(mask, jnp.exp(-_famo_log_d(losses, state, mask)), 0.0)
  zd = z * inv_d
  c = jnp.sum(zd)
  w = zd / jnp.where(c > 0, c, 1.0)
  state = state._replace(prev=_present(losses, mask))
  return _weights(w, mask, losses), state


def _famo_after(next_losses, state, *, mask, lr=None, w_lr=0.025,
                gamma=0.01):
  """FAMO's logit update from the losses after the step (see `_famo_update`)."""
  del lr
  mask = jnp.asarray(mask, bool)
  delta = (_famo_log_d(state.prev, state, mask)
           - _famo_log_d(next_losses, state, mask))
  delta = jnp.where(mask, delta, 0.0)
  z = _masked_softmax(state.logits.param, mask)
  grad = z * (delta - jnp.sum(z * delta))    # J_softmax^T delta
  logits = _adam_step(state.logits, grad, mask, w_lr, weight_decay=gamma)
  return state._replace(logits=logits)


famo = base.Weighting(_famo_init, _famo_update, _famo_after)
registry.WEIGHTINGS.register("famo", famo)
