"""MGDA, UPGrad and DualProj (mtljax.methods.gramian) against their
defining properties and a scipy SLSQP reference.

Compilation dominates this file's time, so every test uses the same few
gradient shapes: P = 12 and T in (1, 2, 4) (padding columns with zeros
where a case is smaller; that changes no solution), and the same call
convention, so each jitted solver compiles once per shape.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from mtljax import methods
from mtljax.methods import gramian as gm

NAMES = ("mgda", "upgrad", "dualproj")


P = 12


def _random(seed, t, p=P, shift=1.0, rank=None):
  """[t, P] gradients; `rank` < t: rank-deficient (as T > P would be)."""
  rng = np.random.default_rng(seed)
  j = rng.normal(size=(t, p)) + shift * rng.normal(size=p)
  if rank is not None:
    j = rng.normal(size=(t, rank)) @ rng.normal(size=(rank, p))
  return j.astype(np.float32)


def _pad(j):
  """j with zero columns up to P (the solutions do not change)."""
  return np.pad(j, ((0, 0), (0, P - j.shape[1])))


def _ref_mgda(g):
  t = len(g)
  r = minimize(lambda a: a @ g @ a, np.ones(t) / t, jac=lambda a: 2 * g @ a,
               bounds=[(0, None)] * t, method="SLSQP",
               constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1}],
               options=dict(ftol=1e-15, maxiter=1000))
  return r.x


def _ref_dual_cone(g, u):
  r = minimize(lambda w: w @ g @ w, u.copy(), jac=lambda w: 2 * g @ w,
               bounds=[(ui, None) for ui in u], method="SLSQP",
               options=dict(ftol=1e-15, maxiter=1000))
  return r.x


def _g64(j):
  j = np.asarray(j, np.float64)
  g = j @ j.T
  return g / np.trace(g)


# (seed, T, rank): rank < T gives a rank-deficient G (as T > P would).
CASES = [(0, 2, None), (1, 4, None), (2, 4, None), (3, 4, 3), (4, 4, 2)]


@pytest.mark.parametrize("seed,t,p", CASES)
def test_mgda_is_min_norm_point_and_kkt(seed, t, p):
  j = _random(seed, t, rank=p)
  g = _g64(j)
  a = np.asarray(gm.min_norm_weights(jnp.asarray(g, jnp.float32)), np.float64)
  assert a.min() >= 0 and abs(a.sum() - 1) < 1e-5
  ref = _ref_mgda(g)
  assert a @ g @ a <= ref @ g @ ref + 1e-6
  q = g @ a
  obj = a @ q
  assert np.all(q >= obj - 1e-5)                       # KKT: all (G a)_i >= obj
  assert np.all(np.abs(q[a > 1e-4] - q.min()) < 1e-5)  # equal on the support
  d = np.asarray(methods.aggregate("mgda", j), np.float64)
  assert np.allclose(d, a @ j, atol=1e-4 * np.abs(j).max())


@pytest.mark.parametrize("seed,t,p", CASES)
def test_dual_cone_projection_matches_reference(seed, t, p):
  j = _random(seed, t, rank=p)
  g = _g64(j)
  u = np.random.default_rng(seed + 100).uniform(0, 1, size=t)
  w = np.asarray(gm.project_weights_dual_cone(jnp.asarray(g, jnp.float32), u),
                 np.float64)
  ref = _ref_dual_cone(g, u)
  assert np.all(w >= u - 1e-6)
  assert w @ g @ w <= ref @ g @ ref + 1e-6
  assert np.all(g @ w >= -1e-5)                  # in the dual cone
  # The projected vector is unique: compare directions (scale ~ gradients).
  scale = np.sqrt(np.trace(j.astype(np.float64) @ j.T.astype(np.float64)))
  gj = j.astype(np.float64) / scale
  assert np.linalg.norm(gj.T @ (w - ref)) < 1e-3


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
@pytest.mark.parametrize("seed,t,p", CASES)
def test_direction_in_dual_cone(name, seed, t, p):
  j = _random(seed, t, shift=0.3, rank=p)
  d = np.asarray(methods.aggregate(name, j), np.float64)
  inner = j.astype(np.float64) @ d
  tol = 1e-5 * np.sum(j.astype(np.float64) ** 2)
  assert np.all(inner >= -tol), inner


def test_upgrad_is_mean_of_projected_rows_and_pref():
  j = _random(3, 4, shift=0.2)
  g = _g64(j)
  rows = [_ref_dual_cone(g, np.eye(4)[i]) for i in range(4)]
  ref = np.mean(rows, axis=0) @ j
  d = np.asarray(methods.aggregate("upgrad", j))
  assert np.allclose(d, ref, atol=1e-4 * np.abs(j).max())
  pref = np.array([0.1, 0.2, 0.3, 0.4])
  refp = np.sum([pref[i] * rows[i] for i in range(4)], axis=0) @ j
  dp = np.asarray(methods.aggregate("upgrad", j, pref=jnp.asarray(pref)))
  assert np.allclose(dp, refp, atol=1e-4 * np.abs(j).max())


def test_dualproj_of_mean():
  j = _random(5, 4, shift=0.2)
  g = _g64(j)
  ref = _ref_dual_cone(g, np.ones(4) / 4) @ j
  d = np.asarray(methods.aggregate("dualproj", j))
  assert np.allclose(d, ref, atol=1e-4 * np.abs(j).max())


def test_conflict_free_inputs_unchanged():
  # Orthogonal-ish non-conflicting gradients: the mean is already in the cone.
  j = np.abs(_random(1, 4))
  w = gm.project_weights_dual_cone(jnp.asarray(j @ j.T), jnp.ones(4) / 4)
  assert np.array_equal(np.asarray(w), np.ones(4, np.float32) / 4)
  np.testing.assert_allclose(methods.aggregate("dualproj", j), j.mean(0),
                             rtol=1e-6)


def test_projection_idempotent():
  j = _random(7, 4, shift=0.0, rank=2)   # T > rank, as T > P
  g = jnp.asarray(j @ j.T)
  w = gm.project_weights_dual_cone(g, jnp.ones(4) / 4)
  w2 = gm.project_weights_dual_cone(g, w)
  d, d2 = np.asarray(w) @ j, np.asarray(w2) @ j
  assert np.linalg.norm(d2 - d) <= 1e-4 * np.linalg.norm(j)


@pytest.mark.parametrize("name", NAMES)
def test_one_task_is_the_gradient_bit_exact(name):
  g = _random(0, 1)
  assert np.array_equal(np.asarray(methods.aggregate(name, g)), g[0])


DEGENERATE = {k: _pad(np.array(v, np.float32)) for k, v in {
    "zero": np.zeros((4, 5)),
    "one_zero": [[1, 2, 0], [0, 0, 0]],
    "duplicate": [[1, 2, 3], [1, 2, 3]],
    "opposed": [[1, -2, 3], [-1, 2, -3]],
    "opposed3": [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, 0, 1]],
    "tiny": np.full((2, 3), 1e-30),
    "huge": [[1e30, 0], [-1e30, 1e30]],
}.items()}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
@pytest.mark.parametrize("name", NAMES)
def test_degenerate_finite(name, case):
  j = DEGENERATE[case]
  d = np.asarray(methods.aggregate(name, j))
  assert d.shape == (j.shape[1],) and np.all(np.isfinite(d))
  if case in ("zero",):
    assert np.all(d == 0)
  if case == "opposed" and name != "upgrad":
    # MGDA: 0 is in the hull; DualProj: the mean is 0.
    assert np.allclose(d, 0, atol=1e-6)
  if case == "duplicate":
    np.testing.assert_allclose(d, j[0], rtol=1e-5)
  if name != "mgda":
    inner = j.astype(np.float64) @ d
    assert np.all(inner >= -1e-5 * np.sum(j.astype(np.float64) ** 2) - 1e-30)


@pytest.mark.parametrize("name", NAMES)
def test_jit_and_vmap_match_unbatched(name):
  # The aggregators are jitted functions: the single calls are jitted ones,
  # and the vmap (inside an outer jit) batches the same program.
  batch = np.stack([_random(s, 4, shift=0.5) for s in range(5)] +
                   [np.zeros((4, P), np.float32)])
  fn = lambda j: methods.aggregate(name, j)
  single = np.stack([np.asarray(fn(j)) for j in batch])
  np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(fn))(batch)), single,
                             rtol=1e-4, atol=1e-5)


def test_mgda_two_tasks_closed_form():
  # Sener & Koltun's T = 2 closed form.
  j = _random(11, 2, shift=0.5).astype(np.float64)
  g1, g2 = j
  gam = np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0, 1)
  a = np.asarray(gm.min_norm_weights(jnp.asarray(j @ j.T, jnp.float32)))
  np.testing.assert_allclose(a, [gam, 1 - gam], atol=1e-5)
