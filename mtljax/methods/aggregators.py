"""The gradient aggregators, one function + one registry line each.

Each is `fn(grads [T, P], **hparams) -> [P]` (see `mtljax.methods`).
"""

from __future__ import annotations

import jax.numpy as jnp

from mtljax import registry


def mean(grads):
  """The mean of the task gradients (equal weighting; mean scale)."""
  return jnp.mean(grads, axis=0)


def sum_(grads):
  """The sum of the task gradients (sum scale)."""
  return jnp.sum(grads, axis=0)


registry.AGGREGATORS.register("mean", mean)
registry.AGGREGATORS.register("sum", sum_)


# --- PCGrad, CAGrad, IMTL-G, GradDrop, Aligned-MTL, Nash-MTL ---------------
# Shared conventions: every solver works on the T x T Gramian (in float32 or
# the input dtype), guards divisions with `jnp.where` (never by a value that
# can be zero), and uses fixed trip counts, so each is jit-able and
# vmappable over runs and finite on zero, duplicate or opposed gradients.

import jax as _jax
import jax.numpy as _jnp


def _gram(grads):
  return grads @ grads.T


def _safe_div(num, den):
  """num / den where den > 0, else 0 (no NaN, no inf, safe gradients)."""
  ok = den > 0
  return _jnp.where(ok, num / _jnp.where(ok, den, 1), 0)


def pcgrad_projected(grads, key=None):
  """PCGrad's projected per-task gradients [T, P] (see `pcgrad`)."""
  grads = _jnp.asarray(grads)
  t = grads.shape[0]
  if key is None:
    order = _jnp.broadcast_to(_jnp.arange(t), (t, t))
  else:
    keys = _jax.random.split(key, t)
    order = _jax.vmap(lambda k: _jax.random.permutation(k, t))(keys)
  sq = _jnp.sum(grads * grads, axis=1)                     # [T]
  rows = _jnp.arange(t)

  def body(k, pc):
    j = order[:, k]                                        # [T] partner of i
    gj = grads[j]                                          # [T, P]
    dot = _jnp.sum(pc * gj, axis=1)
    proj = (j != rows) & (dot < 0)
    coef = _jnp.where(proj, _safe_div(dot, sq[j]), 0)
    return pc - coef[:, None] * gj

  return _jax.lax.fori_loop(0, t, body, grads)


def pcgrad(grads, key=None):
  """PCGrad, "Gradient Surgery for Multi-Task Learning" (Yu et al., 2020).

  For each task i, in a random order of the other tasks j, g_i is projected
  onto the normal plane of the (original) g_j whenever g_i . g_j < 0:
  g_i <- g_i - (g_i . g_j / ||g_j||^2) g_j. Each task has its own random
  order (drawn from `key`, split per task), as in the paper and LibMTL.
  A task's own gradient is skipped (it never conflicts with itself); a zero
  g_j is never projected against.

  Scale: the SUM of the projected gradients (as LibMTL and the paper's
  official code), so T = 1 returns the gradient and no conflict returns the
  sum.

  Args:
    grads: [T, P].
    key: a PRNG key for the orders. None: the fixed order 0, 1, ..., T-1 for
      every task (deterministic, documented; not the paper's random order).
  """
  return _jnp.sum(pcgrad_projected(grads, key), axis=0)


def _simplex_project(v):
  """Euclidean projection of v [T] onto the probability simplex (sort-based)."""
  t = v.shape[0]
  u = _jnp.sort(v)[::-1]
  css = _jnp.cumsum(u) - 1
  idx = _jnp.arange(1, t + 1, dtype=v.dtype)
  cond = u - css / idx > 0
  rho = _jnp.sum(cond)                        # >= 1 always
  theta = css[rho - 1] / rho.astype(v.dtype)
  return _jnp.maximum(v - theta, 0)


def cagrad_weights(grads, c=0.5, iters=200):
  """CAGrad's dual weights w on the simplex (see `cagrad`)."""
  grads = _jnp.asarray(grads)
  t = grads.shape[0]
  dtype = grads.dtype
  g = _gram(grads)
  s = _jnp.mean(_jnp.diag(g))
  a = _safe_div(g, s)                         # scale-free Gramian, mean diag 1
  b = _jnp.full((t,), 1.0 / t, dtype)
  ab = a @ b
  # sqrt(phi) = c ||g0||, in the scale of `a` (LibMTL adds 1e-8 inside sqrt).
  cc = c * _jnp.sqrt(_jnp.maximum(b @ ab, 0) + 1e-8)
  eps = 1e-8

  lrs = 64.0 * 0.5 ** _jnp.arange(24, dtype=dtype)   # a grid line search

  def body(_, w):
    aw = a @ w
    nrm = _jnp.sqrt(_jnp.maximum(w @ aw, 0) + eps)
    grad = ab + cc * aw / nrm
    grad = grad - _jnp.mean(grad)   # same projections, less cancellation
    cands = _jax.vmap(lambda lr: _simplex_project(w - lr * grad))(lrs)
    # f(cand) - f(w), in a form accurate to the difference itself (not to
    # f): the choice does not stall on float32's resolution of f.
    dw = cands - w[None]
    dq = _jnp.sum(dw * ((cands + w[None]) @ a), axis=1)
    qc = _jnp.sqrt(_jnp.maximum(_jnp.sum(cands * (cands @ a), axis=1), 0)
                   + eps)
    df = dw @ ab + cc * dq / (qc + nrm)
    best = _jnp.argmin(df)
    return _jnp.where(df[best] < 0, cands[best], w)        # monotone

  return _jax.lax.fori_loop(0, iters, body, b)


def cagrad(grads, c=0.5, iters=200):
  """CAGrad, "Conflict-Averse Gradient Descent" (Liu et al., NeurIPS 2021).

  With g0 the mean gradient and phi = c^2 ||g0||^2, solves the dual
  min_{w in simplex} g_w . g0 + sqrt(phi) ||g_w||  (g_w = sum_i w_i g_i) on
  the Gramian (normalised by its mean diagonal, so the weights are scale
  free) by `iters` steps of projected gradient descent from the uniform
  point, each step size picked as the best of a fixed grid of 24 (compared by
  f(candidate) - f(w) in a cancellation-free form) (64, 32, ...,
  64 * 2^-23) or no move (monotone; matches scipy SLSQP on LibMTL's
  objective to ~1e-6 relative). The direction is
  d = g0 + (sqrt(phi) / ||g_w||) g_w, divided by (1 + c^2) (the paper's
  Algorithm 1 / LibMTL's rescale=1). c = 0 gives exactly the mean.
  ||g_w|| = 0 (e.g. exactly opposed gradients) gives the mean divided by
  (1 + c^2), not a NaN.

  Scale: the MEAN of the task gradients. For T = 1, d = g (1 + c) / (1 + c^2)
  (the paper's formula; exactly g for c = 0).

  Args:
    grads: [T, P].
    c: the conflict-aversion radius (a per-run value; may be traced).
    iters: dual-solver iterations (static).
  """
  grads = _jnp.asarray(grads)
  w = cagrad_weights(grads, c, iters)
  g0 = _jnp.mean(grads, axis=0)
  gw = w @ grads
  g = _gram(grads)
  g0_norm = _jnp.sqrt(_jnp.maximum(_jnp.mean(g), 0) + 1e-8)
  gw_norm = _jnp.sqrt(_jnp.maximum(w @ g @ w, 0))
  lam = _jnp.where(c == 0, 0.0, _safe_div(c * g0_norm, gw_norm))
  return (g0 + lam * gw) / (1 + c * c)


def imtl_g_weights(grads, rcond=1e-6):
  """IMTL-G's closed-form weights alpha [T], summing to 1 (see `imtl_g`)."""
  grads = _jnp.asarray(grads)
  t = grads.shape[0]
  g = _gram(grads)
  n = _jnp.sqrt(_jnp.maximum(_jnp.diag(g), 0))
  gu = _safe_div(g, n[None, :])               # gu[k, l] = g_k . u_l
  if t == 1:
    return _jnp.ones((1,), grads.dtype)
  # D_k = g_0 - g_k, U_l = u_0 - u_l (k, l = 1..T-1), as in LibMTL.
  du = (gu[0, 0] - gu[0, 1:][None, :] - gu[1:, 0][:, None] + gu[1:, 1:])
  rhs = gu[0, 0] - gu[0, 1:]                  # g_0 U^T
  scale = _jnp.max(_jnp.abs(du))
  a = _jnp.linalg.pinv(_safe_div(du, scale).T, rtol=rcond) @ rhs
  a = _safe_div(a, scale)
  return _jnp.concatenate([1 - _jnp.sum(a, keepdims=True), a])


def imtl_g(grads, rcond=1e-6):
  """IMTL-G, "Towards Impartial Multi-task Learning" (Liu et al., ICLR 2021).

  The closed form: weights alpha summing to 1 such that d = sum_i alpha_i
  g_i has equal projections d . u_i onto every unit task gradient u_i. As in
  LibMTL, alpha_{2:} = g_1 U^T (D U^T)^{-1} with D_k = g_1 - g_k and
  U_k = u_1 - u_k, computed from the Gramian; the inverse is a pseudo-inverse
  (relative cut-off `rcond`), so duplicate or zero gradients give a finite,
  least-squares answer (a zero gradient has u = 0).

  Scale: weights sum to 1, so the MEAN scale (T = 1 returns the gradient).
  """
  grads = _jnp.asarray(grads)
  return imtl_g_weights(grads, rcond) @ grads


def graddrop(grads, key, leak=0.0):
  """GradDrop, "Just Pick a Sign" (Chen et al., NeurIPS 2020).

  Per coordinate, the sign purity P = (1 + sum_i g_i / sum_i |g_i|) / 2
  (P = 1/2 where every g_i is 0); with U ~ Uniform(0, 1) per coordinate
  (from `key`), task i keeps its positive entries where P > U and its
  negative entries where P < U. With leak l, task i contributes
  l g_i + (1 - l) M_i g_i (the paper's leak parameters, one shared value).

  Scale: the SUM of the (masked) gradients; leak = 1 is exactly the sum.
  This is GradDrop applied to the given gradients directly (the paper
  applies it at a layer's activations; LibMTL's rep_grad).

  Args:
    grads: [T, P].
    key: a PRNG key (required; GradDrop is random).
    leak: in [0, 1] (a per-run value; may be traced).
  """
  grads = _jnp.asarray(grads)
  tot = _jnp.sum(grads, axis=0)
  ab = _jnp.sum(_jnp.abs(grads), axis=0)
  p = 0.5 * (1 + _safe_div(tot, ab))
  u = _jax.random.uniform(key, p.shape, grads.dtype)
  m = ((p > u)[None, :] & (grads > 0)) | ((p < u)[None, :] & (grads < 0))
  masked = _jnp.where(m, grads, 0)
  return _jnp.sum(leak * grads + (1 - leak) * masked, axis=0)


def aligned_mtl_matrix(grads, rtol=None):
  """Aligned-MTL's B [T, T] with aligned gradients B @ grads (see below)."""
  grads = _jnp.asarray(grads)
  t = grads.shape[0]
  g = _gram(grads)
  lam, v = _jnp.linalg.eigh(g)
  if rtol is None:
    rtol = 10 * t * _jnp.finfo(grads.dtype).eps
  tol = _jnp.max(lam) * rtol
  keep = lam > tol
  inv_sqrt = _jnp.where(keep, _jax.lax.rsqrt(_jnp.where(keep, lam, 1)), 0)
  sig_min = _jnp.sqrt(_jnp.min(_jnp.where(keep, lam, _jnp.max(lam))))
  sig_min = _jnp.where(_jnp.any(keep), sig_min, 0)
  return sig_min * (v * inv_sqrt[None, :]) @ v.T


def aligned_mtl(grads, rtol=None):
  """Aligned-MTL, "Independent Component Alignment for Multi-Task Learning"
  (Senushkin et al., CVPR 2023).

  With the Gramian G = V diag(lambda) V^T, the aligned gradients are
  B grads with B = sigma_min V_r diag(lambda_r^{-1/2}) V_r^T over the
  eigenvalues above max(lambda) * rtol (default 10 T eps of the dtype;
  LibMTL uses T eps); their nonzero singular values all equal
  sigma_min = sqrt(min kept lambda), i.e. condition number 1. Eigenvalues
  below the cut-off (zero, duplicate or opposed gradients) are dropped, and
  all-zero gradients give a zero direction.

  Scale: the SUM of the aligned gradients, d = 1^T B grads (as LibMTL);
  T = 1 returns the gradient.
  """
  grads = _jnp.asarray(grads)
  b = aligned_mtl_matrix(grads, rtol)
  return _jnp.sum(b, axis=0) @ grads


def nash_mtl_weights(grads, iters=50, ridge=1e-6):
  """Nash-MTL's alpha [T] > 0 with G_hat alpha = 1 / alpha (see `nash_mtl`)."""
  grads = _jnp.asarray(grads)
  t = grads.shape[0]
  dtype = grads.dtype
  g = _gram(grads)
  fro = _jnp.sqrt(_jnp.sum(g * g))
  gh = _safe_div(g, fro)                      # normalised as the authors' code
  m = gh + (ridge + (fro == 0)) * _jnp.eye(t, dtype=dtype)
  a0 = _jax.lax.rsqrt(_jnp.diag(m))           # exact for orthogonal gradients

  def body(_, a):
    r = m @ a - 1 / a                         # gradient of f
    h = m + _jnp.diag(1 / (a * a))            # Hessian (positive definite)
    step = _jnp.linalg.solve(h, r)
    dec = _jnp.sqrt(_jnp.maximum(r @ step, 0))  # Newton decrement
    return a - step / (1 + dec)               # self-concordant damping

  return _jax.lax.fori_loop(0, iters, body, a0)


def nash_mtl(grads, iters=50, ridge=1e-6):
  """Nash-MTL, "Multi-Task Learning as a Bargaining Game" (Navon et al., 2022).

  The Nash bargaining weights alpha > 0 solve G_hat alpha = 1 / alpha, with
  G_hat the Gramian divided by its Frobenius norm (as the authors' code and
  LibMTL). Instead of the paper's CCP steps with cvxpy, alpha minimises the
  strictly convex f(alpha) = alpha^T M alpha / 2 - sum_i log alpha_i (whose
  stationarity is exactly M alpha = 1/alpha), M = G_hat + ridge I, by `iters`
  damped Newton steps alpha <- alpha - H^{-1} r / (1 + lambda) (Nesterov's
  damping for self-concordant functions: stays positive, converges
  quadratically near the solution) from alpha_i = M_ii^{-1/2}. The ridge
  keeps f bounded below when G is singular (opposed or duplicate gradients);
  all-zero gradients give a zero direction.

  Scale: intrinsic to Nash-MTL, neither sum nor mean: ||d||^2 =
  alpha^T G alpha ~= T ||G||_F (T = 1 returns the gradient, to the
  ridge's 1e-6 relative). The authors'
  clipping of the update to norm 1 (max_norm) is not applied here.
  """
  grads = _jnp.asarray(grads)
  return nash_mtl_weights(grads, iters, ridge) @ grads


registry.AGGREGATORS.register("pcgrad", pcgrad)
registry.AGGREGATORS.register("cagrad", cagrad)
registry.AGGREGATORS.register("imtl_g", imtl_g)
registry.AGGREGATORS.register("graddrop", graddrop)
registry.AGGREGATORS.register("aligned_mtl", aligned_mtl)
registry.AGGREGATORS.register("nash_mtl", nash_mtl)


# --- Gramian-based aggregators (MGDA, UPGrad, DualProj); solvers in gramian.py.


def mgda(grads, iters: int = 500):
  """MGDA (Desideri 2012; Sener & Koltun 2018): the minimum-norm point of the
  convex hull of the task gradients, sum_i alpha_i g_i with alpha on the
  simplex. Scale: a convex combination (mean scale; T = 1 gives g exactly).
  """
  from mtljax.methods import gramian  # pylint: disable=g-import-not-at-top
  alpha = gramian.min_norm_weights(gramian.gramian(grads), iters)
  return alpha.astype(grads.dtype) @ grads


def upgrad(grads, pref=None, iters: int = 500):
  """UPGrad (Quinton & Rey 2024, TorchJD): each task gradient projected onto
  the dual cone {d : g_i . d >= 0 for all i}, combined with weights `pref`
  (default 1/T, i.e. the mean of the projections). Scale: mean (with the
  default pref; T = 1 gives g exactly). The direction has a non-negative
  inner product with every task gradient.
  """
  from mtljax.methods import gramian  # pylint: disable=g-import-not-at-top
  w = gramian.upgrad_weights(gramian.gramian(grads), pref, iters)
  return w.astype(grads.dtype) @ grads


def dualproj(grads, pref=None, iters: int = 500):
  """DualProj (Lopez-Paz & Ranzato 2017, Eq. 11; TorchJD): the pref-weighted
  combination of the task gradients (default 1/T: the mean) projected onto
  the dual cone {d : g_i . d >= 0 for all i}. Scale: mean (with the default
  pref; T = 1 gives g exactly).
  """
  from mtljax.methods import gramian  # pylint: disable=g-import-not-at-top
  w = gramian.dualproj_weights(gramian.gramian(grads), pref, iters)
  return w.astype(grads.dtype) @ grads


registry.AGGREGATORS.register("mgda", mgda)
registry.AGGREGATORS.register("upgrad", upgrad)
registry.AGGREGATORS.register("dualproj", dualproj)
