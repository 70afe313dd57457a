"""PCGrad, CAGrad, IMTL-G, GradDrop, Aligned-MTL and Nash-MTL against their
defining properties and independent numpy (float64) references.

Compilation dominates this file's time, so every test uses the same few
gradient shapes, P = 12 and T in (1, 2, 4) (T = 1 takes no solver), and the
same keyword call convention (`call`), so each jitted aggregator compiles
once per shape.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtljax import methods
from mtljax.methods import aggregators as agg

NEW = ("pcgrad", "cagrad", "imtl_g", "graddrop", "aligned_mtl", "nash_mtl")
KEYED = ("pcgrad", "graddrop")
KEY = jax.random.PRNGKey(0)


P = 12


def rand_grads(t, p=P, seed=0, shared=1.0):
  """Random [t, p] gradients with a common component (some conflicts)."""
  rng = np.random.default_rng(seed)
  g = rng.normal(size=(t, p)) + shared * rng.normal(size=(1, p))
  return g.astype(np.float32)


def call(name, g, **kw):
  if name in KEYED and "key" not in kw:
    kw["key"] = KEY
  if name == "cagrad" and "c" not in kw:
    kw["c"] = 0.5  # always passed: c is traced, one compilation per shape
  return methods.aggregate(name, jnp.asarray(g), **kw)


def degenerate():
  rng = np.random.default_rng(7)
  v = rng.normal(size=P).astype(np.float32)
  w = rng.normal(size=P).astype(np.float32)
  u = rng.normal(size=P).astype(np.float32)
  # T = 1, 2 or 4 only (shapes shared with the other tests).
  return {
      "zero1": np.zeros((1, P), np.float32),
      "zero4": np.zeros((4, P), np.float32),
      "one_zero": np.stack([v, np.zeros_like(v), w, u]),
      "duplicate": np.stack([v, v]),
      "duplicate3": np.stack([v, v, w, u]),
      "opposed": np.stack([v, -v]),
      "opposed3": np.stack([v, -v, w, u]),
      "opposed_dup": np.stack([v, -v, v, -v]),
      "tiny": 1e-20 * np.stack([v, w]),
      "huge": 1e15 * np.stack([v, w]),
  }


# ---------------------------------------------------------------- generic


@pytest.mark.parametrize("name", NEW)
def test_registered(name):
  assert name in methods.names()


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("case", list(degenerate()))
def test_finite_on_degenerate(name, case):
  g = degenerate()[case]
  d = np.asarray(call(name, g))
  assert d.shape == (g.shape[1],)
  assert np.all(np.isfinite(d)), (name, case, d)


@pytest.mark.parametrize("name", NEW)
def test_zero_gradients_give_zero(name):
  d = np.asarray(call(name, np.zeros((4, P), np.float32)))
  np.testing.assert_array_equal(d, 0)


@pytest.mark.parametrize("name", ("pcgrad", "imtl_g", "graddrop",
                                  "aligned_mtl", "nash_mtl"))
def test_single_task_returns_gradient(name):
  g = rand_grads(1)
  d = np.asarray(call(name, g))
  np.testing.assert_allclose(d, g[0], rtol=2e-5, atol=1e-6)


def test_single_task_cagrad_scale():
  g = rand_grads(1)
  np.testing.assert_array_equal(np.asarray(call("cagrad", g, c=0.0)), g[0])
  c = 0.5
  np.testing.assert_allclose(np.asarray(call("cagrad", g, c=c)),
                             g[0] * (1 + c) / (1 + c * c), rtol=1e-5)


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("t", (1, 4))
def test_jit_and_vmap_equal_unbatched(name, t):
  # The aggregators are jitted functions, so the single calls are jitted
  # ones; the vmap (inside an outer jit) batches the same program.
  runs = np.stack([rand_grads(t, seed=s) for s in range(3)])
  keys = jax.random.split(KEY, 3)

  def one(g, k):
    return call(name, g, key=k) if name in KEYED else call(name, g)

  ref = np.stack([np.asarray(one(jnp.asarray(g), k))
                  for g, k in zip(runs, keys)])
  batched = np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(runs), keys))
  scale = np.max(np.abs(ref)) + 1e-12
  # CAGrad's float32 dual is flat near its optimum: different XLA fusions
  # stop at points 1e-6 apart in objective, ~1e-3 apart in direction.
  tol = 5e-3 if name == "cagrad" else 1e-5
  np.testing.assert_allclose(batched, ref, atol=max(tol, 1e-4) * scale)


@pytest.mark.parametrize("name", NEW)
def test_deterministic(name):
  g = rand_grads(4)
  np.testing.assert_array_equal(np.asarray(call(name, g)),
                                np.asarray(call(name, g)))


# ----------------------------------------------------------------- PCGrad


def np_pcgrad(g, order):
  """The paper's loop in float64; checks the property after each projection."""
  g = g.astype(np.float64)
  pc = g.copy()
  for i in range(len(g)):
    for j in order[i]:
      if j == i:
        continue
      dot = pc[i] @ g[j]
      if dot < 0:
        pc[i] = pc[i] - dot / (g[j] @ g[j]) * g[j]
        # Just projected against g_j: no negative inner product left.
        assert pc[i] @ g[j] >= -1e-9 * np.linalg.norm(pc[i]) * np.linalg.norm(
            g[j])
  return pc


@functools.partial(jax.jit, static_argnums=1)
def _orders(key, t):
  keys = jax.random.split(key, t)
  return jax.vmap(lambda k: jax.random.permutation(k, t))(keys)


def pcgrad_orders(key, t):
  return np.asarray(_orders(key, t))


@pytest.mark.parametrize("t", (4,))  # T = 2: test_pcgrad_two_tasks_...
@pytest.mark.parametrize("seed", range(4))
def test_pcgrad_matches_numpy_loop(t, seed):
  g = rand_grads(t, seed=seed, shared=0.3)
  key = jax.random.PRNGKey(seed)
  pc = np_pcgrad(g, pcgrad_orders(key, t))
  np.testing.assert_allclose(np.asarray(agg.pcgrad_projected(g, key=key)),
                             pc, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(call("pcgrad", g, key=key)),
                             pc.sum(0), rtol=1e-4, atol=1e-4)
  # key=None: the fixed order 0..T-1 for every task.
  fixed = np_pcgrad(g, np.tile(np.arange(t), (t, 1)))
  np.testing.assert_allclose(np.asarray(call("pcgrad", g, key=None)),
                             fixed.sum(0), rtol=1e-4, atol=1e-4)


def test_pcgrad_two_tasks_no_conflict_left():
  rng = np.random.default_rng(3)
  for _ in range(20):
    g = rng.normal(size=(2, P)).astype(np.float32)
    pc = np.asarray(agg.pcgrad_projected(g, key=KEY))
    scale = np.linalg.norm(g[0]) * np.linalg.norm(g[1])
    assert pc[0] @ g[1] >= -1e-5 * scale
    assert pc[1] @ g[0] >= -1e-5 * scale
    if g[0] @ g[1] < 0:  # a conflict: projected exactly onto the normal plane
      assert abs(pc[0] @ g[1]) <= 1e-5 * scale


def test_pcgrad_no_conflict_is_sum_and_opposed_cancel():
  g = np.abs(rand_grads(4))
  np.testing.assert_allclose(np.asarray(call("pcgrad", g)), g.sum(0),
                             rtol=1e-6)
  v = rand_grads(1)[0]
  np.testing.assert_allclose(np.asarray(call("pcgrad", np.stack([v, -v]))),
                             0, atol=1e-5)


def test_pcgrad_order_depends_on_key():
  g = rand_grads(4, seed=1, shared=0.0)
  outs = {tuple(np.round(np.asarray(call("pcgrad", g,
                                         key=jax.random.PRNGKey(s))), 4))
          for s in range(8)}
  assert len(outs) > 1


# ----------------------------------------------------------------- CAGrad


def np_cagrad(g, c):
  """LibMTL's CAGrad (scipy SLSQP dual, rescale=1) in float64."""
  from scipy.optimize import minimize  # pylint: disable=g-import-not-at-top
  g = g.astype(np.float64)
  gg = g @ g.T
  t = len(g)
  b = np.ones(t) / t
  cc = c * np.sqrt(gg.mean() + 1e-8) + 1e-8
  obj = lambda x: x @ gg @ b + cc * np.sqrt(x @ gg @ x + 1e-8)
  res = minimize(obj, b, bounds=[(0, 1)] * t, options={"ftol": 1e-12},
                 constraints=({"type": "eq", "fun": lambda x: 1 - x.sum()},))
  gw = res.x @ g
  d = g.mean(0) + cc / (np.linalg.norm(gw) + 1e-8) * gw
  return d / (1 + c * c), obj, res.fun


@pytest.mark.parametrize("t", (4,))
def test_cagrad_c0_is_mean(t):
  for seed in range(3):
    g = rand_grads(t, seed=seed)
    np.testing.assert_array_equal(np.asarray(call("cagrad", g, c=0.0)),
                                  np.asarray(jnp.mean(jnp.asarray(g), 0)))
  for g in degenerate().values():
    np.testing.assert_array_equal(np.asarray(call("cagrad", g, c=0.0)),
                                  np.asarray(jnp.mean(jnp.asarray(g), 0)))


@pytest.mark.parametrize("t", (4,))
@pytest.mark.parametrize("c", (0.5,))
def test_cagrad_matches_scipy(t, c):
  for seed in range(3):
    g = rand_grads(t, seed=seed, shared=0.5)
    ref, obj, fstar = np_cagrad(g, c)
    w = np.asarray(agg.cagrad_weights(g, c=c)).astype(np.float64)
    assert abs(w.sum() - 1) < 1e-5 and w.min() >= 0
    # The dual objective is at least as good as SLSQP's (to 1e-5).
    assert obj(w) <= fstar + 1e-5 * abs(fstar), (obj(w), fstar)
    d = np.asarray(call("cagrad", g, c=c))
    np.testing.assert_allclose(d, ref, rtol=2e-3,
                               atol=2e-3 * np.abs(ref).max())


def test_cagrad_conflict_averse():
  # The primal constraint: ||d(1+c^2) - g0|| <= c ||g0||, with equality.
  for seed in range(5):
    g = rand_grads(4, seed=seed, shared=0.3)
    c = 0.5
    g0 = g.astype(np.float64).mean(0)
    d = np.asarray(call("cagrad", g, c=c)).astype(np.float64) * (1 + c * c)
    np.testing.assert_allclose(np.linalg.norm(d - g0),
                               c * np.linalg.norm(g0), rtol=1e-3)


def test_cagrad_c_traced_in_vmap():
  g = jnp.asarray(rand_grads(4))
  cs = jnp.array([0.0, 0.3, 0.8])
  batched = jax.vmap(lambda c: call("cagrad", g, c=c))(cs)
  for c, row in zip(cs, batched):
    ref = call("cagrad", g, c=float(c))
    np.testing.assert_allclose(row, ref, atol=5e-3 * np.abs(ref).max())
  np.testing.assert_allclose(batched[0], jnp.mean(g, 0), rtol=1e-6)


# ----------------------------------------------------------------- IMTL-G


def np_imtl_g(g):
  """LibMTL's IMTL-G closed form on the gradients, float64."""
  g = g.astype(np.float64)
  u = g / np.linalg.norm(g, axis=1, keepdims=True)
  dd = g[0:1] - g[1:]
  uu = u[0:1] - u[1:]
  a = g[0] @ uu.T @ np.linalg.inv(dd @ uu.T)
  a = np.concatenate([[1 - a.sum()], a])
  return a @ g, a


@pytest.mark.parametrize("t", (2, 4))
def test_imtl_g_equal_projections_and_numpy(t):
  for seed in range(5):
    g = rand_grads(t, seed=seed, shared=0.5)
    d = np.asarray(call("imtl_g", g)).astype(np.float64)
    u = g.astype(np.float64)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    proj = u @ d
    np.testing.assert_allclose(proj, proj.mean(), rtol=1e-3)
    a = np.asarray(agg.imtl_g_weights(g))
    np.testing.assert_allclose(a.sum(), 1, atol=1e-5)
    ref, ref_a = np_imtl_g(g)
    np.testing.assert_allclose(a, ref_a, rtol=5e-3, atol=5e-3)
    np.testing.assert_allclose(d, ref, rtol=5e-3, atol=5e-3 * abs(ref).max())


def test_imtl_g_opposed_and_duplicate():
  v = rand_grads(1)[0]
  np.testing.assert_allclose(np.asarray(call("imtl_g", np.stack([v, -v]))), 0,
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(call("imtl_g", np.stack([v, v]))), v,
                             rtol=1e-4)


def test_imtl_g_scale_equivariant():
  g = rand_grads(4)
  np.testing.assert_allclose(np.asarray(agg.imtl_g_weights(g * 1000)),
                             np.asarray(agg.imtl_g_weights(g)), rtol=1e-3,
                             atol=1e-4)


# --------------------------------------------------------------- GradDrop


_uniform = jax.jit(lambda key: jax.random.uniform(key, (P,), jnp.float32))


def np_graddrop(g, u, leak):
  g = g.astype(np.float64)
  p = 0.5 * (1 + g.sum(0) / np.where(np.abs(g).sum(0) > 0,
                                     np.abs(g).sum(0), 1))
  m = ((p > u) & (g > 0)) | ((p < u) & (g < 0))
  return (leak * g + (1 - leak) * g * m).sum(0)


@pytest.mark.parametrize("t", (1, 4))
@pytest.mark.parametrize("leak", (0.0, 0.3, 1.0))
def test_graddrop_matches_numpy(t, leak):
  for seed in range(4):  # several keys: one compilation
    g = rand_grads(t, seed=seed)
    key = jax.random.PRNGKey(10 * t + seed)
    u = np.asarray(_uniform(key))
    np.testing.assert_allclose(
        np.asarray(call("graddrop", g, key=key, leak=leak)),
        np_graddrop(g, u, leak), rtol=1e-5, atol=1e-5)


def test_graddrop_leak1_is_sum_and_signs_are_pure():
  for seed in range(8):  # many coordinates in all, one compilation
    g = rand_grads(4, seed=seed)
    key = jax.random.PRNGKey(seed)
    np.testing.assert_allclose(
        np.asarray(call("graddrop", g, key=key, leak=1.0)), g.sum(0),
        rtol=1e-5, atol=1e-6)
    # leak 0: each coordinate keeps only one sign's contributions.
    d = np.asarray(call("graddrop", g, key=key, leak=0.0))
    pos = np.where(g > 0, g, 0).sum(0)
    neg = np.where(g < 0, g, 0).sum(0)
    ok = np.isclose(d, pos, atol=1e-6) | np.isclose(d, neg, atol=1e-6)
    assert ok.all()
    # Agreeing signs are never dropped.
    a = np.abs(g)
    np.testing.assert_allclose(np.asarray(call("graddrop", a, key=key)),
                               a.sum(0), rtol=1e-6)


# ------------------------------------------------------------ Aligned-MTL


def np_aligned(g):
  """LibMTL's Aligned-MTL in float64 (eigh of the Gramian)."""
  g = g.astype(np.float64)
  lam, v = np.linalg.eigh(g @ g.T)
  keep = lam > lam.max() * 1e-10
  lam, v = lam[keep], v[:, keep]
  b = np.sqrt(lam.min()) * (v / np.sqrt(lam)) @ v.T
  return b.sum(0) @ g, b


@pytest.mark.parametrize("t", (2, 4))
def test_aligned_mtl_condition_number_one_and_numpy(t):
  for seed in range(5):
    g = rand_grads(t, seed=seed)
    b = np.asarray(agg.aligned_mtl_matrix(g)).astype(np.float64)
    s = np.linalg.svd(b @ g.astype(np.float64), compute_uv=False)
    assert s.max() / s.min() < 1 + 1e-3, s
    d = np.asarray(call("aligned_mtl", g))
    ref, _ = np_aligned(g)
    np.testing.assert_allclose(d, ref, rtol=2e-3, atol=2e-3 * abs(ref).max())


def test_aligned_mtl_rank_deficient():
  # A duplicate + two more: rank 3, the aligned matrix has 3 equal singular
  # values and one zero.
  g = degenerate()["duplicate3"]
  b = np.asarray(agg.aligned_mtl_matrix(g)).astype(np.float64)
  s = np.linalg.svd(b @ g.astype(np.float64), compute_uv=False)
  assert s[2] > 0 and s[0] / s[2] < 1 + 1e-3 and s[3] < 1e-3 * s[0], s
  # Orthogonal gradients of different norms: all rescaled to the smallest.
  g = np.eye(4, P, dtype=np.float32) * np.float32([[1], [2], [3], [4]])
  np.testing.assert_allclose(np.asarray(call("aligned_mtl", g)),
                             [1, 1, 1, 1] + [0] * (P - 4), rtol=1e-5)


# --------------------------------------------------------------- Nash-MTL


@pytest.mark.parametrize("t", (1, 2, 4))
def test_nash_mtl_fixed_point(t):
  for seed in range(5):
    g = rand_grads(t, seed=seed, shared=0.5)
    a = np.asarray(agg.nash_mtl_weights(g)).astype(np.float64)
    gg = g.astype(np.float64) @ g.T.astype(np.float64)
    assert np.linalg.cond(gg) < 1e3
    gh = gg / np.linalg.norm(gg)
    assert a.min() > 0
    res = np.linalg.norm(gh @ a - 1 / a) / np.linalg.norm(1 / a)
    assert res < 1e-3, res
    np.testing.assert_allclose(np.asarray(call("nash_mtl", g)), a @ g,
                               rtol=1e-4, atol=1e-5 * np.abs(a @ g).max())


def test_nash_mtl_orthogonal_closed_form():
  # Orthogonal gradients: alpha_i = 1 / ||g_i|| (in the normalised Gramian).
  norms = np.array([1.0, 2.0, 4.0, 8.0])
  g = np.eye(4, P, dtype=np.float32) * norms[:, None].astype(np.float32)
  a = np.asarray(agg.nash_mtl_weights(g))
  fro = np.sqrt(np.sum(norms ** 4))
  # (to the ridge's 1e-6 / (||g_i||^2 / ||G||_F) relative)
  np.testing.assert_allclose(a, np.sqrt(fro) / norms, rtol=1e-4)


def test_nash_mtl_scale_convention():
  # ||d||^2 = alpha^T G alpha = T ||G||_F (up to the ridge).
  g = rand_grads(4, seed=2)
  d = np.asarray(call("nash_mtl", g)).astype(np.float64)
  gg = g.astype(np.float64) @ g.T.astype(np.float64)
  np.testing.assert_allclose(d @ d, 4 * np.linalg.norm(gg), rtol=1e-3)
