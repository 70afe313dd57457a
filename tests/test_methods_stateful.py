"""GradVac and GradNorm (mtljax.methods.stateful) against numpy (float64)
ports of the papers' / LibMTL's updates and their defining properties, and
the methods API (get_aggregator, get_weighting, names).

Shapes are shared (T = 2 or 3, P = 12) so the jitted updates compile once.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtljax import methods
from mtljax.methods import base
from mtljax.methods import stateful

P = 12
KEY = jax.random.PRNGKey(0)


def rand_grads(t, seed=0, shared=0.3):
  rng = np.random.default_rng(seed)
  g = rng.normal(size=(t, P)) + shared * rng.normal(size=(1, P))
  return g.astype(np.float32)


@functools.partial(jax.jit, static_argnums=1)
def _orders(key, t):
  return stateful._orders(key, t)  # pylint: disable=protected-access


# ---------------------------------------------------------------- GradVac


def np_gradvac(g, rho, order, beta, ema_if_adjusted=False):
  """LibMTL's GradVac loop (group type 0) in float64; rho is updated."""
  g = g.astype(np.float64)
  pc = g.copy()
  t = len(g)
  for i in range(t):
    for j in order[i]:
      if j == i:
        continue
      nrm_i, nrm_j = np.linalg.norm(pc[i]), np.linalg.norm(g[j])
      phi = pc[i] @ g[j] / (nrm_i * nrm_j)
      ph = rho[i, j]
      if phi < ph:
        w = nrm_i * (ph * np.sqrt(1 - phi ** 2) - phi * np.sqrt(1 - ph ** 2))
        w /= nrm_j * np.sqrt(1 - ph ** 2)
        pc[i] = pc[i] + w * g[j]
        # The defining property: the pair now has cosine phi_hat exactly.
        np.testing.assert_allclose(
            pc[i] @ g[j] / (np.linalg.norm(pc[i]) * nrm_j), ph, atol=1e-9)
      if phi < ph or not ema_if_adjusted:
        rho[i, j] = (1 - beta) * ph + beta * phi
  return pc.sum(0)


@pytest.mark.parametrize("ema_if_adjusted", (False, True))
def test_gradvac_matches_numpy_over_steps(ema_if_adjusted):
  agg = methods.get_aggregator("gradvac")
  t, beta = 3, 0.5
  state = agg.init(t)
  rho = np.zeros((t, t))
  for step in range(6):
    g = rand_grads(t, seed=step, shared=0.5)
    key = jax.random.PRNGKey(step)
    ref = np_gradvac(g, rho, np.asarray(_orders(key, t)), beta,
                     ema_if_adjusted)
    d, state = agg.update(jnp.asarray(g), state, key=key, beta=beta,
                          ema_if_adjusted=ema_if_adjusted)
    np.testing.assert_allclose(np.asarray(d), ref, rtol=1e-4,
                               atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(np.asarray(state), rho, atol=1e-5)
  if not ema_if_adjusted:
    assert np.asarray(state).max() > 0  # the paper's targets can rise above 0


def test_gradvac_sets_the_target_cosine_two_tasks():
  g = np.stack([rand_grads(1, seed=1)[0], rand_grads(1, seed=2)[0]])
  g[1] -= 1.5 * g[0]                      # a conflict: cos < 0 < target
  cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)
  assert cos(g[0], g[1]) < 0.4
  targets = jnp.asarray([[0.0, 0.4], [0.4, 0.0]])
  pc, new = stateful.gradvac_adjusted(g, targets, key=None, beta=0.25)
  pc = np.asarray(pc, np.float64)
  np.testing.assert_allclose(cos(pc[0], g[1]), 0.4, atol=1e-5)
  np.testing.assert_allclose(cos(pc[1], g[0]), 0.4, atol=1e-5)
  phi = cos(g[0], g[1])
  np.testing.assert_allclose(np.asarray(new)[0, 1], 0.75 * 0.4 + 0.25 * phi,
                             atol=1e-6)


def test_gradvac_zero_targets_is_pcgrad():
  g = rand_grads(3, seed=4, shared=0.0)
  agg = methods.get_aggregator("gradvac")
  d, _ = agg.update(jnp.asarray(g), agg.init(3), key=KEY)
  np.testing.assert_allclose(np.asarray(d),
                             np.asarray(methods.aggregate("pcgrad", g, key=KEY)),
                             rtol=1e-5, atol=1e-5)


def test_gradvac_mask_degenerate_and_vmap():
  agg = methods.get_aggregator("gradvac")
  g = rand_grads(3, seed=5)
  state = jnp.full((3, 3), 0.3)
  m = np.array([True, False, True])
  bad = g.copy()
  bad[1] = np.nan
  d, new = agg.update(jnp.asarray(bad), state, mask=m, key=None)
  sub_d, sub_new = agg.update(jnp.asarray(g[m]), state[:2, :2], key=None)
  np.testing.assert_allclose(np.asarray(d), np.asarray(sub_d), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(new)[np.ix_(m, m)],
                             np.asarray(sub_new), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(new)[1], state[1])  # absent:
  np.testing.assert_array_equal(np.asarray(new)[:, 1], state[:, 1])  # as is
  # (key=None and a mask throughout: the masked call's compilation.)
  d0, _ = agg.update(jnp.asarray(bad), state, mask=np.zeros(3, bool), key=None)
  np.testing.assert_array_equal(np.asarray(d0), 0)
  d1, _ = agg.update(jnp.asarray(bad), state, mask=np.eye(3, dtype=bool)[2],
                     key=None)
  np.testing.assert_array_equal(np.asarray(d1), g[2])
  v = g[0]
  for case in (np.zeros((3, P)), np.stack([v, v, v]), np.stack([v, -v, v])):
    d, s = agg.update(jnp.asarray(case, jnp.float32), jnp.full((3, 3), 0.9),
                      mask=np.ones(3, bool), key=None)
    assert np.all(np.isfinite(np.asarray(d))) and np.all(np.isfinite(s))
  # Over runs: states, gradients, keys and a traced beta per run.
  runs = jnp.asarray(np.stack([rand_grads(3, seed=s) for s in range(3)]))
  states = jnp.stack([state] * 3)
  keys = jax.random.split(KEY, 3)
  betas = jnp.asarray([0.1, 0.5, 0.9])
  upd = jax.jit(jax.vmap(lambda g, s, k, b: agg.update(g, s, key=k, beta=b)))
  ds, ss = upd(runs, states, keys, betas)
  for r in range(3):
    d, s = agg.update(runs[r], state, key=keys[r], beta=betas[r])
    np.testing.assert_allclose(ds[r], d, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ss[r], s, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------- GradNorm


def np_gradnorm(g, losses, w, l0, alpha, lr):
  """One GradNorm step (the paper's Algorithm 1, plain SGD on w), float64."""
  g = g.astype(np.float64)
  nrm = np.linalg.norm(g, axis=1)
  big_g = w * nrm
  lt = losses / l0
  r = lt / lt.mean()
  target = big_g.mean() * r ** alpha
  grad = np.sign(big_g - target) * nrm
  new = np.maximum(w - lr * grad, 0)
  new = new * len(w) / new.sum()
  return w @ g, new


def test_gradnorm_matches_numpy_one_update():
  agg = methods.get_aggregator("gradnorm")
  g = rand_grads(3, seed=6)
  l0 = np.array([2.0, 1.0, 0.5])
  state = stateful.GradNormState(jnp.asarray([0.8, 1.5, 0.7]),
                                 jnp.asarray(l0, jnp.float32),
                                 jnp.ones(3, bool))
  losses = np.array([1.0, 0.9, 0.1])
  d, new = agg.update(jnp.asarray(g), state, losses=jnp.asarray(losses),
                      lr=0.05, alpha=1.5)
  ref_d, ref_w = np_gradnorm(g, losses, np.array([0.8, 1.5, 0.7]), l0, 1.5,
                             0.05)
  np.testing.assert_allclose(np.asarray(d), ref_d, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(new.weights), ref_w, rtol=1e-5)
  # The first step records L(0) and leaves the weights' sum at T.
  d, s = agg.update(jnp.asarray(g), agg.init(3), losses=jnp.asarray(losses),
                    w_lr=0.05)
  np.testing.assert_allclose(np.asarray(s.initial_losses), losses, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(d), g.sum(0), rtol=1e-5)
  np.testing.assert_allclose(float(jnp.sum(s.weights)), 3, rtol=1e-6)
  with pytest.raises(ValueError, match="losses"):
    agg.update(jnp.asarray(g), state, lr=0.1)


def test_gradnorm_mask():
  agg = methods.get_aggregator("gradnorm")
  g = rand_grads(3, seed=7)
  bad = g.copy()
  bad[1] = np.inf
  losses = np.array([1.0, np.nan, 2.0], np.float32)
  m = np.array([True, False, True])
  d, s = agg.update(jnp.asarray(bad), agg.init(3), losses=losses, mask=m,
                    w_lr=0.1)
  assert np.all(np.isfinite(np.asarray(d)))
  np.testing.assert_allclose(np.asarray(d), g[0] + g[2], rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(s.seen), m)
  assert float(s.weights[1]) == 1.0 and float(s.initial_losses[1]) == 0
  np.testing.assert_allclose(float(s.weights[0] + s.weights[2]), 2, rtol=1e-6)
  # Task 1 appears later: its L(0) is its loss at that step.
  d, s = agg.update(jnp.asarray(g), s, losses=jnp.asarray([1.0, 3.0, 2.0]),
                    w_lr=0.1)
  assert float(s.initial_losses[1]) == 3.0
  np.testing.assert_allclose(float(jnp.sum(s.weights)), 3, rtol=1e-5)
  d0, _ = agg.update(jnp.asarray(bad), s, losses=losses, mask=np.zeros(3, bool),
                     w_lr=0.1)
  np.testing.assert_array_equal(np.asarray(d0), 0)


def _train(use_gradnorm, steps=80, lr=0.02, alpha=1.5, w_lr=0.02):
  """Two linear regressions on disjoint halves of theta; task 0's loss is
  100x task 1's, so with equal weights task 0 trains far faster."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(64, 4)), jnp.float32)
  y = x @ jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)  # reducible
  scales = jnp.asarray([10.0, 1.0])

  def losses_fn(theta):
    pred = jnp.stack([x @ theta[:4], x @ theta[4:]], axis=1)
    return scales * jnp.mean((pred - y) ** 2, axis=0)

  agg = methods.get_aggregator("gradnorm")

  def body(carry, _):
    theta, state = carry
    losses, vjp = jax.vjp(losses_fn, theta)
    grads = jax.vmap(vjp)(jnp.eye(2))[0]          # [T, P]
    if use_gradnorm:
      d, state = agg.update(grads, state, losses=losses, alpha=alpha,
                            w_lr=w_lr)
    else:
      d = jnp.sum(grads, axis=0)
    return (theta - lr * d, state), losses

  theta0 = jnp.zeros(8)
  (_, _), hist = jax.lax.scan(body, (theta0, agg.init(2)), None, steps)
  hist = np.asarray(hist)
  rates = hist[-1] / hist[0]                       # L_t / L_t(0)
  return rates


def test_gradnorm_equalises_training_rates():
  plain = _train(False)
  gn = _train(True)
  spread = lambda r: abs(np.log(r[0]) - np.log(r[1]))
  assert spread(gn) < 0.5 * spread(plain), (plain, gn)


# -------------------------------------------------------------------- API


def test_api_stateful_and_names():
  for name in ("gradvac", "gradnorm"):
    assert isinstance(methods.get_aggregator(name), base.Aggregator)
    with pytest.raises(ValueError, match="get_aggregator"):
      methods.aggregate(name, np.ones((2, 3), np.float32))
  mean = methods.get_aggregator("mean")
  d, st = mean.update(jnp.ones((2, 3)), mean.init(2))
  np.testing.assert_array_equal(np.asarray(d), 1)
  assert isinstance(methods.get_weighting("static"), base.Weighting)
  names = methods.names()
  assert isinstance(names, tuple) and all(isinstance(n, str) for n in names)
  assert set(methods.aggregator_names()) <= set(names)
  assert set(methods.weighting_names()) <= set(names)
  assert {"gradvac", "gradnorm", "mgda_ub", "static"} <= set(names)
  assert methods.registry.method_hparams(
      methods.get_aggregator("gradnorm")) == ("alpha", "w_lr")
  assert methods.registry.method_hparams(
      methods.get_aggregator("gradvac")) == ("beta", "ema_if_adjusted")
  from mtljax.methods import aggregators  # pylint: disable=g-import-not-at-top
  assert aggregators.mgda_ub.representation is True
