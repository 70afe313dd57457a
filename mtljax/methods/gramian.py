"""Quadratic-program solvers on the T x T Gramian G = J J^T, in pure JAX.

Every solver here is deterministic, jit-able and vmappable: fixed iteration
counts in `jax.lax.fori_loop`, no Python branching on values, and guards so
that zero, duplicate or exactly opposed gradients give finite weights.

The problems are invariant to a positive rescaling of G (the weights of
MGDA and of a dual-cone projection do not change when all gradients are
scaled by the same factor), so each solver first divides G by its trace
(guarded at 0), which puts the largest eigenvalue in [1/T, 1] and makes one
step size fit all scales.

Algorithm: accelerated projected gradient (FISTA, Beck & Teboulle 2009) with
step 1 / lambda_max(G) and O'Donoghue & Candes' gradient restart, which keeps
the objective decreasing and gives a linear rate when G is non-singular. The
projections are exact: onto the simplex (Duchi et al. 2008, sort-based) for
MGDA, onto the box {w >= u} for the dual-cone projection.

Present-task masks: every solver takes `mask` ([T] bool, None: all
present) and solves the problem of the present tasks alone; absent tasks
get weight 0 whatever their rows of G hold (they are zeroed first).

Each public solver is jitted (`iters` static): called eagerly, a
`fori_loop` would otherwise be re-traced and re-compiled at every call.
Inside an outer jit or vmap the inner jit is simply inlined.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp

DEFAULT_ITERS = 500


def jit(fn=None, *, static=("iters",), signature=None):
  """`jax.jit` with one cache entry per shape, however the function is called.

  jax.jit keys its cache on how arguments are passed (`f(g, k)`,
  `f(g, key=k)` and `f(g, key=k, iters=500)` compile three times); this
  wrapper binds every call to the signature first (defaults applied) and
  passes all arguments by keyword. `static`: the argument names that shape
  the program (iteration counts, option strings). The jitted function is
  `wrapper.jitted`; `signature`: document the wrapper with another
  function (an alias such as MGDA-UB sharing MGDA's compilations).
  """
  if fn is None:
    return functools.partial(jit, static=static, signature=signature)
  names = tuple(n for n in static if n in inspect.signature(fn).parameters)
  jitted = getattr(fn, "jitted", None) or jax.jit(fn, static_argnames=names)
  sig = inspect.signature(signature or fn)

  @functools.wraps(signature or fn)
  def wrapper(*args, **kwargs):
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    return jitted(**bound.arguments)

  wrapper.jitted = jitted
  return wrapper


_jit_iters = jit


def present(mask, t):
  """The [T] bool mask of present tasks (all for None)."""
  if mask is None:
    return jnp.ones((t,), bool)
  return jnp.asarray(mask).astype(bool).reshape((t,))


def mask_rows(grads, mask):
  """grads with absent rows set to 0 (a select: NaN/inf there cannot leak)."""
  return jnp.where(present(mask, grads.shape[0])[:, None], grads, 0)


def mask_gramian(G, mask):
  """G with the rows and columns of absent tasks set to 0."""
  m = present(mask, G.shape[-1])
  return jnp.where(m[:, None] & m[None, :], G, 0)


def one_present(w, mask):
  """w, or exactly the indicator when one task is present.

  With a single present task every weighted method here reduces to that
  task's gradient; the solvers get there only up to rounding, the select
  makes it exact.
  """
  m = present(mask, w.shape[-1])
  return jnp.where(jnp.sum(m) == 1, m.astype(w.dtype), w)


@jit
def gramian(grads, mask=None):
  """G = grads grads^T, [T, T], computed on grads rescaled by max |grads|.

  The rescaling (a positive scalar, guarded at 0) avoids overflow/underflow
  in the squares; every solver here is invariant to it. Absent rows (mask)
  are zeroed first.
  """
  grads = mask_rows(jnp.asarray(grads), mask)
  scale = jnp.max(jnp.abs(grads))
  scale = jnp.where(jnp.isfinite(scale) & (scale > 0), scale, 1.0)
  g = grads / scale
  return g @ g.T


def normalize(G):
  """Symmetrises G and divides it by its trace (left as is when trace <= 0)."""
  G = 0.5 * (G + G.T)
  tr = jnp.trace(G)
  return G / jnp.where(tr > 0, tr, 1.0)


def _step(G):
  """1 / L for the trace-normalised G, L = lambda_max clipped to [1/T, 1]."""
  t = G.shape[-1]
  lmax = jnp.max(jnp.linalg.eigvalsh(G))
  lmax = jnp.clip(jnp.where(jnp.isfinite(lmax), lmax, 1.0), 1.0 / t, 1.0)
  return 1.0 / lmax


def project_simplex(v, mask=None):
  """Euclidean projection of v [T] onto the probability simplex.

  With a mask, onto the simplex of the present coordinates (absent ones are
  0; all zeros when none is present).
  """
  t = v.shape[-1]
  if mask is not None:
    m = present(mask, t)
    # Absent entries go below the threshold theta >= max(v_present) - 1, so
    # the sort-based formula never counts them (and they project to 0).
    top = jnp.max(jnp.where(m, v, -jnp.inf))
    v = jnp.where(m, v, jnp.where(jnp.isfinite(top), top - 2.0, 0.0))
    return jnp.where(m, project_simplex(v), 0.0)
  mu = jnp.sort(v)[::-1]
  css = jnp.cumsum(mu) - 1.0
  k = jnp.arange(1, t + 1, dtype=v.dtype)
  cond = mu - css / k > 0  # True for a prefix; index 0 always True
  rho = jnp.sum(cond.astype(jnp.int32))
  theta = css[rho - 1] / rho.astype(v.dtype)
  return jnp.maximum(v - theta, 0.0)


def _fista(G, x0, project, iters):
  """min_x 1/2 x^T G x over a convex set (its `project`), from feasible x0."""
  step = _step(G)

  def body(_, state):
    x, y, tk = state
    x_new = project(y - step * (G @ y))
    t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * tk * tk))
    # Gradient restart: drop the momentum when it points uphill.
    restart = jnp.dot(y - x_new, x_new - x) > 0
    t_new = jnp.where(restart, 1.0, t_new)
    beta = jnp.where(restart, 0.0, (tk - 1.0) / t_new)
    y_new = x_new + beta * (x_new - x)
    return x_new, y_new, t_new

  one = jnp.ones((), x0.dtype)
  x, _, _ = jax.lax.fori_loop(0, iters, body, (x0, x0, one))
  return x


@_jit_iters
def min_norm_weights(G, iters: int = DEFAULT_ITERS, mask=None):
  """MGDA's weights: alpha on the simplex minimising alpha^T G alpha.

  J^T alpha is then the minimum-norm point of the convex hull of the task
  gradients (Desideri 2012; Sener & Koltun 2018).

  Args:
    G: [T, T] Gramian (positive semi-definite).
    iters: fixed number of accelerated projected-gradient steps.
    mask: [T] bool of the present tasks (None: all); the simplex is that of
      the present tasks.

  Returns:
    [T] weights, non-negative, summing to 1 over the present tasks (0 for
    absent ones; all 0 when none is present). Starts from (and, for one
    present task, returns exactly) the uniform weights.
  """
  t = G.shape[-1]
  m = present(mask, t)
  G = normalize(mask_gramian(jnp.asarray(G), m))
  n = jnp.maximum(jnp.sum(m), 1).astype(G.dtype)
  x0 = jnp.where(m, 1.0 / n, 0.0).astype(G.dtype)
  a = _fista(G, x0, lambda v: project_simplex(v, m), iters)
  # Active-set polish: on the support S, KKT says (G a)_S = nu, sum a_S = 1.
  q = G @ a
  free = (a > q - jnp.dot(a, q)) & m  # a_i > reduced gradient (0 on support)
  both = free[:, None] & free[None, :]
  eye = jnp.eye(t, dtype=G.dtype)
  top = jnp.concatenate([jnp.where(both, G, eye),
                         jnp.where(free, -1.0, 0.0)[:, None]], axis=1)
  bottom = jnp.concatenate([jnp.where(free, 1.0, 0.0),
                            jnp.where(jnp.any(free), 0.0, 1.0)[None]])[None]
  rhs = jnp.concatenate([jnp.zeros((t,), G.dtype), jnp.ones((1,), G.dtype)])
  cand = project_simplex((jnp.linalg.pinv(jnp.concatenate([top, bottom]))
                          @ rhs)[:t] * free, m)
  return one_present(_keep_better(G, a, cand), m)


def _keep_better(G, x, cand):
  """cand where it is finite and strictly lowers x^T G x, else x."""
  obj = lambda v: jnp.dot(v, G @ v)
  ok = jnp.all(jnp.isfinite(cand)) & (obj(cand) < obj(x))
  return jnp.where(ok, cand, x)


@_jit_iters
def project_weights_dual_cone(G, u, iters: int = DEFAULT_ITERS, mask=None):
  """Weights w with J^T w = the projection of J^T u onto {d : J d >= 0}.

  The projection is min_d 1/2 ||d - J^T u||^2 s.t. J d >= 0. Its Lagrangian
  gives d = J^T (u + lam) with lam >= 0, and the dual is
  min_{lam >= 0} 1/2 (u + lam)^T G (u + lam); with w = u + lam this is
  min_w 1/2 w^T G w s.t. w >= u (Proposition 1 of Quinton & Rey,
  "Jacobian Descent for Multi-Objective Optimization", 2024). Its KKT
  conditions are G w >= 0 (the direction is in the dual cone), w >= u and
  (w - u)_i (G w)_i = 0.

  Args:
    G: [T, T] Gramian (positive semi-definite).
    u: [T] weights of the vector to project.
    iters: fixed number of accelerated projected-gradient steps.
    mask: [T] bool of the present tasks (None: all): the cone and the
      weights are those of the present tasks; absent weights are 0.

  Returns:
    [T] weights w >= u. Starts from u, so a J^T u already in the dual cone
    with G u = 0 stays exactly u; T = 1 returns u exactly when u >= 0.
  """
  t = G.shape[-1]
  m = present(mask, t)
  G = normalize(mask_gramian(jnp.asarray(G), m))
  u = jnp.where(m, jnp.asarray(u, G.dtype), 0.0)
  w = _fista(G, u, lambda v: jnp.where(m, jnp.maximum(v, u), 0.0), iters)
  # Active-set polish: (G w)_i = 0 where w_i > u_i, w_i = u_i elsewhere.
  q = G @ w
  free = ((w - u) > q) & m
  both = free[:, None] & free[None, :]
  eye = jnp.eye(t, dtype=G.dtype)
  mat = jnp.where(both, G, jnp.where(free[:, None], 0.0, eye))
  rhs = jnp.where(free, -(G @ jnp.where(free, 0.0, u)), u)
  cand = jnp.where(m, jnp.maximum(jnp.linalg.pinv(mat) @ rhs, u), 0.0)
  return _keep_better(G, w, cand)


def _pref(pref, m, dtype):
  """pref on the present tasks (default 1/T' over the T' present), 0 absent."""
  if pref is None:
    n = jnp.maximum(jnp.sum(m), 1).astype(dtype)
    return jnp.where(m, 1.0 / n, 0.0).astype(dtype)
  return jnp.where(m, jnp.asarray(pref, dtype), 0.0)


@_jit_iters
def upgrad_weights(G, pref=None, iters: int = DEFAULT_ITERS, mask=None):
  """UPGrad's weights: sum_i of the dual-cone projection weights of pref_i e_i.

  With pref = 1/T' (default; T' present tasks), this is the mean over the
  present tasks of the projections of each task gradient onto the dual cone
  of all of them.
  """
  G = jnp.asarray(G)
  m = present(mask, G.shape[-1])
  U = jnp.diag(_pref(pref, m, G.dtype))
  W = jax.vmap(lambda u: project_weights_dual_cone(G, u, iters, m))(U)
  return one_present(jnp.sum(W, axis=0), m) if pref is None else jnp.sum(
      W, axis=0)


@_jit_iters
def dualproj_weights(G, pref=None, iters: int = DEFAULT_ITERS, mask=None):
  """DualProj's weights: the projection of the pref-weighted gradient combination.

  With pref = 1/T' (default; T' present tasks), this projects the mean
  gradient onto the dual cone (Lopez-Paz & Ranzato 2017, Eq. 11; TorchJD's
  DualProj).
  """
  G = jnp.asarray(G)
  m = present(mask, G.shape[-1])
  w = project_weights_dual_cone(G, _pref(pref, m, G.dtype), iters, m)
  return one_present(w, m) if pref is None else w


__all__ = ["DEFAULT_ITERS", "jit", "present", "mask_rows", "mask_gramian",
           "one_present", "gramian", "normalize", "project_simplex",
           "min_norm_weights", "project_weights_dual_cone", "upgrad_weights",
           "dualproj_weights"]
