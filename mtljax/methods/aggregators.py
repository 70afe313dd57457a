"""The gradient aggregators, one function + one registry line each.

Each is `fn(grads [T, P], *, mask=None, **hparams) -> [P]` (see
`mtljax.methods`). `mask` is the [T] bool of the tasks present in this step
(None: all): the result equals the aggregator applied to grads[mask] alone,
whatever the absent rows hold (they are zeroed by a select first, so
NaN/inf there cannot leak); no task present gives zeros.

Every public function is jitted by `gramian.jit` (iteration counts static;
one compilation per shape however it is called): eagerly, a `fori_loop`
would otherwise be re-compiled at every call; under an outer jit or vmap it
is inlined. MGDA/UPGrad/DualProj: `minnorm.py`; GradVac/GradNorm
(stateful): `stateful.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtljax import registry
from mtljax.methods import gramian as gm

_jit = gm.jit


def _count(m, dtype):
  """The number of present tasks as `dtype`, at least 1 (a safe divisor)."""
  return jnp.maximum(jnp.sum(m), 1).astype(dtype)


@_jit
def mean(grads, mask=None):
  """The mean of the present task gradients (equal weighting; mean scale)."""
  m = gm.present(mask, grads.shape[0])
  return jnp.sum(gm.mask_rows(grads, m), axis=0) / _count(m, grads.dtype)


@_jit
def sum_(grads, mask=None):
  """The sum of the present task gradients (sum scale)."""
  return jnp.sum(gm.mask_rows(grads, mask), axis=0)


registry.AGGREGATORS.register("mean", mean)
registry.AGGREGATORS.register("sum", sum_)


# --- PCGrad, CAGrad, IMTL-G, GradDrop, Aligned-MTL, Nash-MTL ---------------
# Shared conventions: every solver works on the T x T Gramian (in float32 or
# the input dtype), guards divisions with `jnp.where` (never by a value that
# can be zero), and uses fixed trip counts, so each is jit-able and
# vmappable over runs and finite on zero, duplicate or opposed gradients.
# An absent task's row is zero, so it never projects, conflicts or enters a
# normalisation; the solvers restrict their simplex to the present tasks.


def _gram(grads):
  return grads @ grads.T


def _safe_div(num, den):
  """num / den where den > 0, else 0 (no NaN, no inf, safe gradients)."""
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1), 0)


@_jit
def pcgrad_projected(grads, key=None, mask=None):
  """PCGrad's projected per-task gradients [T, P] (see `pcgrad`)."""
  grads = gm.mask_rows(jnp.asarray(grads), mask)
  t = grads.shape[0]
  if t == 1:
    return grads  # nothing to project against (and nothing to compile)
  if key is None:
    order = jnp.broadcast_to(jnp.arange(t), (t, t))
  else:
    keys = jax.random.split(key, t)
    order = jax.vmap(lambda k: jax.random.permutation(k, t))(keys)
  sq = jnp.sum(grads * grads, axis=1)                      # [T]
  rows = jnp.arange(t)

  def body(k, pc):
    j = order[:, k]                                        # [T] partner of i
    gj = grads[j]                                          # [T, P]
    dot = jnp.sum(pc * gj, axis=1)
    proj = (j != rows) & (dot < 0)
    coef = jnp.where(proj, _safe_div(dot, sq[j]), 0)
    return pc - coef[:, None] * gj

  return jax.lax.fori_loop(0, t, body, grads)


@_jit
def pcgrad(grads, key=None, mask=None):
  """PCGrad, "Gradient Surgery for Multi-Task Learning" (Yu et al., 2020).

  For each task i, in a random order of the other tasks j, g_i is projected
  onto the normal plane of the (original) g_j whenever g_i . g_j < 0:
  g_i <- g_i - (g_i . g_j / ||g_j||^2) g_j. Each task has its own random
  order (drawn from `key`, split per task), as in the paper and LibMTL.
  A task's own gradient is skipped (it never conflicts with itself); a zero
  g_j (or an absent task's) is never projected against.

  Scale: the SUM of the projected gradients (as LibMTL and the paper's
  official code), so T = 1 returns the gradient and no conflict returns the
  sum.

  Args:
    grads: [T, P].
    key: a PRNG key for the orders. None: the fixed order 0, 1, ..., T-1 for
      every task (deterministic, documented; not the paper's random order).
      With a mask, each present task visits the other present ones in the
      order its permutation of all T gives them.
    mask: [T] bool of the present tasks (None: all).
  """
  return jnp.sum(pcgrad_projected(grads, key, mask), axis=0)


@_jit
def cagrad_weights(grads, c=0.5, iters=200, mask=None):
  """CAGrad's dual weights w on the simplex of present tasks (see `cagrad`)."""
  grads = jnp.asarray(grads)
  t = grads.shape[0]
  dtype = grads.dtype
  m = gm.present(mask, t)
  if t == 1:
    return m.astype(dtype)  # the simplex is one point
  n = _count(m, dtype)
  g = _gram(gm.mask_rows(grads, m))
  s = jnp.sum(jnp.diag(g)) / n
  a = _safe_div(g, s)                   # scale-free Gramian, mean diag 1
  b = jnp.where(m, 1 / n, 0).astype(dtype)
  ab = a @ b
  # sqrt(phi) = c ||g0||, in the scale of `a` (LibMTL adds 1e-8 inside sqrt).
  cc = c * jnp.sqrt(jnp.maximum(b @ ab, 0) + 1e-8)
  eps = 1e-8

  lrs = 64.0 * 0.5 ** jnp.arange(24, dtype=dtype)   # a grid line search

  def body(_, w):
    aw = a @ w
    nrm = jnp.sqrt(jnp.maximum(w @ aw, 0) + eps)
    grad = ab + cc * aw / nrm
    # Same projections, less cancellation (the mean over present tasks).
    grad = jnp.where(m, grad - jnp.sum(jnp.where(m, grad, 0)) / n, 0)
    cands = jax.vmap(lambda lr: gm.project_simplex(w - lr * grad, m))(lrs)
    # f(cand) - f(w), in a form accurate to the difference itself (not to
    # f): the choice does not stall on float32's resolution of f.
    dw = cands - w[None]
    dq = jnp.sum(dw * ((cands + w[None]) @ a), axis=1)
    qc = jnp.sqrt(jnp.maximum(jnp.sum(cands * (cands @ a), axis=1), 0)
                  + eps)
    df = dw @ ab + cc * dq / (qc + nrm)
    best = jnp.argmin(df)
    return jnp.where(df[best] < 0, cands[best], w)        # monotone

  return jax.lax.fori_loop(0, iters, body, b)


@_jit
def cagrad(grads, c=0.5, iters=200, mask=None):
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
  (1 + c^2), not a NaN. With a mask, g0, b and the simplex are those of
  the present tasks.

  Scale: the MEAN of the task gradients. For T = 1, d = g (1 + c) / (1 + c^2)
  (the paper's formula; exactly g for c = 0).

  Args:
    grads: [T, P].
    c: the conflict-aversion radius (a per-run value; may be traced).
    iters: dual-solver iterations (static).
    mask: [T] bool of the present tasks (None: all).
  """
  grads = jnp.asarray(grads)
  m = gm.present(mask, grads.shape[0])
  n = _count(m, grads.dtype)
  grads = gm.mask_rows(grads, m)
  w = cagrad_weights(grads, c, iters, m)
  g0 = jnp.sum(grads, axis=0) / n
  gw = w @ grads
  g = _gram(grads)
  g0_norm = jnp.sqrt(jnp.maximum(jnp.sum(g) / (n * n), 0) + 1e-8)
  gw_norm = jnp.sqrt(jnp.maximum(w @ g @ w, 0))
  lam = jnp.where(c == 0, 0.0, _safe_div(c * g0_norm, gw_norm))
  return (g0 + lam * gw) / (1 + c * c)


@_jit
def imtl_g_weights(grads, rcond=1e-6, mask=None):
  """IMTL-G's closed-form weights alpha [T], summing to 1 (see `imtl_g`)."""
  grads = jnp.asarray(grads)
  t = grads.shape[0]
  m = gm.present(mask, t)
  if t == 1:
    return m.astype(grads.dtype)
  g = gm.gramian(grads, m)                    # rescaled: scale free
  nrm = jnp.sqrt(jnp.maximum(jnp.diag(g), 0))
  live = m & (nrm > 0)                        # present, nonzero gradients
  gu = _safe_div(g, nrm[:, None])             # gu[i, k] = u_i . g_k
  scale = jnp.max(jnp.abs(gu))
  gu = _safe_div(gu, scale)
  eye = jnp.eye(t, dtype=g.dtype)
  both = live[:, None] & live[None, :]
  # Unknowns (alpha, lambda): u_i . (sum_k alpha_k g_k) = lambda for live i,
  # alpha_i = 0 for the others, sum alpha = 1 -- a (T+1) x (T+1) system.
  top = jnp.concatenate([jnp.where(both, gu, jnp.where(live[:, None], 0, eye)),
                         jnp.where(live, -1.0, 0.0)[:, None]], axis=1)
  bottom = jnp.concatenate([live.astype(g.dtype), jnp.zeros((1,), g.dtype)])
  mat = jnp.concatenate([top, bottom[None]]).astype(g.dtype)
  rhs = jnp.zeros((t + 1,), g.dtype).at[t].set(1)
  a = (jnp.linalg.pinv(mat, rtol=rcond) @ rhs)[:t]
  return gm.one_present(jnp.where(live, a, 0), live).astype(grads.dtype)


@_jit
def imtl_g(grads, rcond=1e-6, mask=None):
  """IMTL-G, "Towards Impartial Multi-task Learning" (Liu et al., ICLR 2021).

  The closed form: weights alpha summing to 1 such that d = sum_i alpha_i
  g_i has equal projections d . u_i onto every unit task gradient u_i.
  LibMTL writes it as alpha_{2:} = g_1 U^T (D U^T)^{-1} (D_k = g_1 - g_k,
  U_k = u_1 - u_k), which needs a fixed reference task; here the same
  conditions are one (T+1) x (T+1) linear system in (alpha, lambda) built
  from the Gramian -- (G alpha)_i / ||g_i|| = lambda for each present task
  with a nonzero gradient, alpha = 0 for the others (absent or zero, which
  have no direction to project on), sum alpha = 1 -- solved by a
  pseudo-inverse (relative cut-off `rcond`), so duplicate or opposed
  gradients give a finite, least-squares answer. Where the system is
  non-singular this is exactly LibMTL's alpha.

  Scale: weights sum to 1, so the MEAN scale (one task returns its
  gradient exactly).
  """
  grads = gm.mask_rows(jnp.asarray(grads), mask)
  return imtl_g_weights(grads, rcond, mask) @ grads


@_jit
def graddrop(grads, key, leak=0.0, mask=None):
  """GradDrop, "Just Pick a Sign" (Chen et al., NeurIPS 2020).

  Per coordinate, the sign purity P = (1 + sum_i g_i / sum_i |g_i|) / 2
  (P = 1/2 where every g_i is 0); with U ~ Uniform(0, 1) per coordinate
  (from `key`), task i keeps its positive entries where P > U and its
  negative entries where P < U. With leak l, task i contributes
  l g_i + (1 - l) M_i g_i (the paper's leak parameters, one shared value).
  Absent tasks (mask) enter neither P nor the sum; one present task is
  returned exactly.

  Scale: the SUM of the (masked) gradients; leak = 1 is exactly the sum.
  This is GradDrop applied to the given gradients directly (the paper
  applies it at a layer's activations; LibMTL's rep_grad).

  Args:
    grads: [T, P].
    key: a PRNG key (required; GradDrop is random).
    leak: in [0, 1] (a per-run value; may be traced).
    mask: [T] bool of the present tasks (None: all).
  """
  m = gm.present(mask, grads.shape[0])
  grads = gm.mask_rows(jnp.asarray(grads), m)
  tot = jnp.sum(grads, axis=0)
  if grads.shape[0] == 1:
    return tot
  ab = jnp.sum(jnp.abs(grads), axis=0)
  p = 0.5 * (1 + _safe_div(tot, ab))
  u = jax.random.uniform(key, p.shape, grads.dtype)
  keep = ((p > u)[None, :] & (grads > 0)) | ((p < u)[None, :] & (grads < 0))
  masked = jnp.where(keep, grads, 0)
  d = jnp.sum(leak * grads + (1 - leak) * masked, axis=0)
  # One task: P is 0 or 1, so only U == 0 exactly could drop an entry.
  return jnp.where(jnp.sum(m) == 1, tot, d)


@_jit
def aligned_mtl_matrix(grads, rtol=None, mask=None):
  """Aligned-MTL's B [T, T] with aligned gradients B @ grads (see below)."""
  grads = jnp.asarray(grads)
  m = gm.present(mask, grads.shape[0])
  g = _gram(gm.mask_rows(grads, m))
  lam, v = jnp.linalg.eigh(g)
  if rtol is None:
    rtol = 10 * jnp.sum(m) * jnp.finfo(grads.dtype).eps
  tol = jnp.max(lam) * rtol
  keep = lam > tol
  inv_sqrt = jnp.where(keep, jax.lax.rsqrt(jnp.where(keep, lam, 1)), 0)
  sig_min = jnp.sqrt(jnp.min(jnp.where(keep, lam, jnp.max(lam))))
  sig_min = jnp.where(jnp.any(keep), sig_min, 0)
  b = sig_min * (v * inv_sqrt[None, :]) @ v.T
  # The kept eigenvectors lie in the present tasks' coordinates; the select
  # removes rounding noise there.
  return jnp.where(m[:, None] & m[None, :], b, 0)


@_jit
def aligned_mtl(grads, rtol=None, mask=None):
  """Aligned-MTL, "Independent Component Alignment for Multi-Task Learning"
  (Senushkin et al., CVPR 2023).

  With the Gramian G = V diag(lambda) V^T, the aligned gradients are
  B grads with B = sigma_min V_r diag(lambda_r^{-1/2}) V_r^T over the
  eigenvalues above max(lambda) * rtol (default 10 T' eps of the dtype, T'
  present tasks; LibMTL uses T eps); their nonzero singular values all equal
  sigma_min = sqrt(min kept lambda), i.e. condition number 1. Eigenvalues
  below the cut-off (zero, duplicate or opposed gradients, absent tasks)
  are dropped, and all-zero gradients give a zero direction.

  Scale: the SUM of the aligned gradients, d = 1^T B grads (as LibMTL);
  one task returns its gradient exactly.
  """
  m = gm.present(mask, grads.shape[0])
  grads = gm.mask_rows(jnp.asarray(grads), m)
  if grads.shape[0] == 1:
    return grads[0]  # B = [1] (or [0] for a zero gradient: the same d)
  w = gm.one_present(jnp.sum(aligned_mtl_matrix(grads, rtol, m), axis=0), m)
  return w @ grads


@_jit
def nash_mtl_weights(grads, iters=50, ridge=1e-6, mask=None):
  """Nash-MTL's alpha [T] > 0 with G_hat alpha = 1 / alpha (see `nash_mtl`).

  Absent tasks are decoupled (their rows of M are the identity, so their
  alpha stays 1) and get weight 0.
  """
  grads = jnp.asarray(grads)
  t = grads.shape[0]
  dtype = grads.dtype
  m = gm.present(mask, t)
  g = _gram(gm.mask_rows(grads, m))
  fro = jnp.sqrt(jnp.sum(g * g))
  gh = _safe_div(g, fro)                      # normalised as the authors' code
  eye = jnp.eye(t, dtype=dtype)
  mm = jnp.where(m[:, None] & m[None, :], gh + (ridge + (fro == 0)) * eye, eye)
  a0 = jax.lax.rsqrt(jnp.diag(mm))            # exact for orthogonal gradients
  if t == 1:
    return jnp.where(m, a0, 0)                # a0 is the solution already

  def body(_, a):
    r = mm @ a - 1 / a                        # gradient of f
    h = mm + jnp.diag(1 / (a * a))            # Hessian (positive definite)
    step = jnp.linalg.solve(h, r)
    dec = jnp.sqrt(jnp.maximum(r @ step, 0))  # Newton decrement
    return a - step / (1 + dec)               # self-concordant damping

  return jnp.where(m, jax.lax.fori_loop(0, iters, body, a0), 0)


@_jit
def nash_mtl(grads, iters=50, ridge=1e-6, mask=None):
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
  grads = gm.mask_rows(jnp.asarray(grads), mask)
  return nash_mtl_weights(grads, iters, ridge, mask) @ grads


registry.AGGREGATORS.register("pcgrad", pcgrad)
registry.AGGREGATORS.register("cagrad", cagrad)
registry.AGGREGATORS.register("imtl_g", imtl_g)
registry.AGGREGATORS.register("graddrop", graddrop)
registry.AGGREGATORS.register("aligned_mtl", aligned_mtl)
registry.AGGREGATORS.register("nash_mtl", nash_mtl)


# --- Gramian-based aggregators (MGDA, MGDA-UB, UPGrad, DualProj): minnorm.py.
# pylint: disable=g-import-not-at-top,wrong-import-position
from mtljax.methods.minnorm import dualproj, mgda, mgda_ub, upgrad

registry.AGGREGATORS.register("mgda", mgda)
registry.AGGREGATORS.register("mgda_ub", mgda_ub)
registry.AGGREGATORS.register("upgrad", upgrad)
registry.AGGREGATORS.register("dualproj", dualproj)

# --- Stateful aggregators (GradVac, GradNorm): they register themselves.
from mtljax.methods import stateful  # noqa: E402,F401
