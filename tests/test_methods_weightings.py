"""UW, IMTL-L, DWA, RLW, GLS and FAMO against their papers (closed forms,
convergence) and independent numpy (float64) references, plus the contract
every registered weighting keeps: absent tasks weigh 0 and never leak, one
or no present task, jit + vmap over runs with traced hyperparameters."""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtljax import registry
from mtljax.methods import weightings as wts

NEW = ("uw", "imtl_l", "dwa", "rlw", "gls", "famo")
HPARAMS = {"static": (), "uw": ("s_lr",), "imtl_l": ("s_lr",),
           "dwa": ("temperature", "period"), "rlw": (), "gls": (),
           "famo": ("w_lr", "gamma"), "target": ("task", "share")}
# Static (int) hyperparameters for the rollouts: short DWA windows, so that
# eight steps already use the ratio of two windows.
STATIC = {"dwa": {"period": 2}}
K, T = 8, 4


def float_hparams(name):
  """The method's float hyperparameters and their defaults."""
  fn = registry.WEIGHTINGS.get(name).update
  return {n: p.default for n, p in inspect.signature(fn).parameters.items()
          if n in registry.method_hparams(registry.WEIGHTINGS.get(name))
          and isinstance(p.default, float)}


@functools.lru_cache(maxsize=None)
def rollout_fn(name, vmapped=False):
  """jit(rollout) for one method: K steps of update (and after, on 0.9 x the
  losses) from init; returns (weights [K, T], final state). One compilation
  per method and shape, shared by the tests."""
  wt = registry.WEIGHTINGS.get(name)
  static = STATIC.get(name, {})

  def rollout(losses, masks, lr, hp, seed):
    state = wt.init(losses.shape[1])

    def body(state, x):
      l, m, k = x
      key = jax.random.fold_in(jax.random.PRNGKey(seed), k)
      w, state = wt.update(l, state, mask=m, step=k, key=key, lr=lr, **hp,
                           **static)
      if wt.after is not None:
        state = wt.after(0.9 * l, state, mask=m, lr=lr, **hp, **static)
      return state, w

    state, w = jax.lax.scan(body, state, (losses, masks,
                                          jnp.arange(losses.shape[0])))
    return w, state

  if vmapped:
    rollout = jax.vmap(rollout)
  return jax.jit(rollout)


def run(name, losses, masks, lr=0.01, hp=None, seed=0):
  hp = {n: jnp.float32(v) for n, v in
        {**float_hparams(name), **(hp or {})}.items()}
  return rollout_fn(name)(jnp.asarray(losses, jnp.float32),
                          jnp.asarray(masks, bool), jnp.float32(lr), hp, seed)


def rand_losses(k=K, t=T, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(0.2, 3.0, size=(k, t)).astype(np.float32)


def rand_masks(k=K, t=T, seed=1):
  rng = np.random.default_rng(seed)
  m = rng.uniform(size=(k, t)) < 0.7
  m[:, 0] = True      # task 0 always present, task 3 never
  m[:, 3] = False
  return m


def leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


# ---------------------------------------------------------------- contract


def test_registered():
  assert set(HPARAMS) <= set(registry.WEIGHTINGS.names())


@pytest.mark.parametrize("name", registry.WEIGHTINGS.names())
def test_hparams(name):
  got = registry.method_hparams(registry.WEIGHTINGS.get(name))
  if name in HPARAMS:
    assert got == HPARAMS[name]
  wt = registry.WEIGHTINGS.get(name)
  if wt.after is not None:   # after takes the same hyperparameters
    params = inspect.signature(wt.after).parameters
    assert all(h in params for h in got)


@pytest.mark.parametrize("name", registry.WEIGHTINGS.names())
def test_absent_is_zero_and_never_leaks(name):
  losses, masks = rand_losses(), rand_masks()
  w_a, st_a = run(name, np.where(masks, losses, 7.0), masks)
  w_b, st_b = run(name, np.where(masks, losses, np.nan), masks)
  w_c, _ = run(name, np.where(masks, losses, np.inf), masks)
  w_a = np.asarray(w_a)
  assert np.all(np.isfinite(w_a))
  assert np.all(w_a[~masks] == 0)
  assert np.all(w_a[masks] > 0)
  np.testing.assert_array_equal(w_a, np.asarray(w_b))
  np.testing.assert_array_equal(w_a, np.asarray(w_c))
  for a, b in zip(leaves(st_a), leaves(st_b)):
    np.testing.assert_array_equal(a, b)
    assert np.all(np.isfinite(a))


@pytest.mark.parametrize("name", registry.WEIGHTINGS.names())
def test_degenerate(name):
  ones = np.ones((K, T), bool)
  # No present task: all weights 0, a finite state.
  w, st = run(name, rand_losses(), np.zeros((K, T), bool))
  assert np.all(np.asarray(w) == 0)
  assert all(np.all(np.isfinite(a)) for a in leaves(st))
  # Zero losses: finite.
  w, st = run(name, np.zeros((K, T)), ones)
  assert np.all(np.isfinite(np.asarray(w)))
  assert all(np.all(np.isfinite(a)) for a in leaves(st))
  # One task (T = 1): positive; exactly 1 for the normalised methods.
  for losses in (rand_losses(t=1), np.zeros((K, 1))):
    w, st = run(name, losses, np.ones((K, 1), bool))
    w = np.asarray(w)
    assert np.all(np.isfinite(w)) and np.all(w > 0)
    if name not in ("uw", "imtl_l"):
      np.testing.assert_allclose(w, 1.0, rtol=1e-6)


@pytest.mark.parametrize("name", registry.WEIGHTINGS.names())
def test_vmap_over_runs_equals_separate_calls(name):
  """Three runs with their own lr, float hyperparameters, seeds and
  losses; jit(vmap) gives what three separate calls give."""
  losses = np.stack([rand_losses(seed=s) for s in range(3)])
  masks = np.stack([rand_masks(seed=s) for s in range(3)])
  lrs = np.float32([0.01, 0.03, 0.1])
  defaults = float_hparams(name)
  hp = {n: np.float32([v, 1.5 * v, 0.5 * v] if v else [0.0, 0.05, 0.2])
        for n, v in defaults.items()}
  seeds = np.arange(3)
  w_v, st_v = rollout_fn(name, vmapped=True)(
      jnp.asarray(losses), jnp.asarray(masks), jnp.asarray(lrs),
      {n: jnp.asarray(v) for n, v in hp.items()}, jnp.asarray(seeds))
  for r in range(3):
    w, st = run(name, losses[r], masks[r], lr=lrs[r],
                hp={n: v[r] for n, v in hp.items()}, seed=int(seeds[r]))
    np.testing.assert_allclose(np.asarray(w_v)[r], np.asarray(w),
                               rtol=2e-6, atol=1e-7)
    for a, b in zip(leaves(st_v), leaves(st)):
      np.testing.assert_allclose(a[r], b, rtol=2e-6, atol=1e-7)
  if defaults:   # the traced hyperparameters alone make the runs differ
    same = lambda x: jnp.asarray(np.stack([x[0]] * 3))
    w_h, _ = rollout_fn(name, vmapped=True)(
        same(losses), same(masks), same(lrs),
        {n: jnp.asarray(v) for n, v in hp.items()}, same(seeds))
    assert not np.allclose(np.asarray(w_h)[0], np.asarray(w_h)[1])
    assert not np.allclose(np.asarray(w_h)[0], np.asarray(w_h)[2])


# ------------------------------------------------------------ references


def np_softmax(x):
  e = np.exp(x - np.max(x))
  return e / e.sum()


class NpAdam:
  """torch.optim.Adam on a vector, L2 weight decay, in float64."""

  def __init__(self, n, lr, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8):
    self.p = np.zeros(n)
    self.m, self.v, self.t = np.zeros(n), np.zeros(n), np.zeros(n)
    self.lr, self.wd, self.b1, self.b2, self.eps = lr, weight_decay, b1, b2, eps

  def step(self, g, idx):
    """A step on the coordinates idx (the others are not touched)."""
    g = g + self.wd * self.p[idx]
    self.t[idx] += 1
    self.m[idx] = self.b1 * self.m[idx] + (1 - self.b1) * g
    self.v[idx] = self.b2 * self.v[idx] + (1 - self.b2) * g * g
    bc1 = 1 - self.b1 ** self.t[idx]
    bc2 = 1 - self.b2 ** self.t[idx]
    denom = np.sqrt(self.v[idx]) / np.sqrt(bc2) + self.eps
    self.p[idx] -= self.lr / bc1 * self.m[idx] / denom


@pytest.mark.parametrize("name", ["uw", "imtl_l"])
def test_learned_scales_vs_numpy(name):
  """A few masked steps against a float64 Adam on the paper's objective."""
  losses, masks = rand_losses(), rand_masks()
  w, st = run(name, losses, masks, lr=0.05)
  adam = NpAdam(T, lr=0.05)
  sign = -1.0 if name == "uw" else 1.0   # uw: exp(-s) L + s; IMTL-L: exp(s) L - s
  for k in range(K):
    idx = np.flatnonzero(masks[k])
    ref = np.where(masks[k], np.exp(sign * adam.p), 0.0)
    np.testing.assert_allclose(np.asarray(w)[k], ref, rtol=1e-5)
    l = losses[k, idx].astype(np.float64)
    e = np.exp(sign * adam.p[idx])
    adam.step(1 - e * l if name == "uw" else e * l - 1, idx)
  np.testing.assert_allclose(np.asarray(st.param), adam.p, rtol=1e-5,
                             atol=1e-6)
  assert np.all(np.asarray(st.param)[3] == 0)   # never present


@pytest.mark.parametrize("name", ["uw", "imtl_l"])
def test_learned_scales_converge(name):
  """Constant losses: uw's s -> log L (Kendall's optimum sigma^2 = L),
  IMTL-L's s -> -log L (every scaled loss exp(s) L = 1)."""
  target = np.float32([0.5, 2.0, 5.0, 1.0])
  mask = jnp.asarray([True, True, True, False])
  wt = registry.WEIGHTINGS.get(name)

  @jax.jit
  def go():
    def body(st, _):
      return wt.update(jnp.asarray(target), st, mask=mask, step=0, key=None,
                       lr=0.0, s_lr=0.05)[1], None
    return jax.lax.scan(body, wt.init(4), None, length=1500)[0]

  s = np.asarray(go().param)
  want = np.log(target[:3]) * (1 if name == "uw" else -1)
  np.testing.assert_allclose(s[:3], want, atol=2e-2)
  assert s[3] == 0


@pytest.mark.parametrize("name", ["uw", "imtl_l"])
def test_learned_scales_finite_on_zero_losses(name):
  """A loss that stays 0 pushes s to its bound, not the weight to inf."""
  wt = registry.WEIGHTINGS.get(name)
  mask = jnp.ones(2, bool)

  @jax.jit
  def go():
    def body(st, _):
      w, st = wt.update(jnp.zeros(2), st, mask=mask, step=0, key=None,
                        lr=None, s_lr=10.0)
      return st, w
    return jax.lax.scan(body, wt.init(2), None, length=30)

  st, w = go()
  assert np.all(np.isfinite(np.asarray(w)))
  np.testing.assert_allclose(np.abs(np.asarray(st.param)), 50.0)


def np_dwa(losses, masks, temperature, period):
  """DWA with windows of `period` steps, each task's means over the steps it
  was present in; r = 1 without two windows."""
  k_steps, t = losses.shape
  means = [[] for _ in range(t)]
  buf = [[] for _ in range(t)]
  out = np.zeros((k_steps, t))
  for k in range(k_steps):
    r = np.array([m[-1] / m[-2] if len(m) >= 2 and m[-2] > 0 else 1.0
                  for m in means])
    idx = np.flatnonzero(masks[k])
    if idx.size:
      out[k, idx] = idx.size * np_softmax(r[idx] / temperature)
    for i in idx:
      buf[i].append(float(losses[k, i]))
    if (k + 1) % period == 0:
      for i in range(t):
        if buf[i]:
          means[i].append(np.mean(buf[i]))
        buf[i] = []
  return out


def test_dwa_vs_numpy():
  k_steps = 20
  rng = np.random.default_rng(3)
  # Decreasing losses at different speeds, so the ratios differ by task.
  losses = (np.exp(-np.outer(np.arange(k_steps), [0.02, 0.1, 0.3, 0.05]))
            * rng.uniform(0.8, 1.2, (k_steps, T))).astype(np.float32)
  masks = rng.uniform(size=(k_steps, T)) < 0.75
  masks[:, 0] = True
  masks[5:12, 2] = False   # task 2 misses whole windows
  wt = registry.WEIGHTINGS.get("dwa")

  @jax.jit
  def go(losses, masks, temperature):
    def body(st, x):
      w, st = wt.update(x[0], st, mask=x[1], step=0, key=None, lr=0.0,
                        temperature=temperature, period=3)
      return st, w
    return jax.lax.scan(body, wt.init(T), (losses, masks))[1]

  for temperature in (2.0, 0.5):
    w = np.asarray(go(jnp.asarray(losses), jnp.asarray(masks),
                      jnp.float32(temperature)))
    ref = np_dwa(losses, masks, temperature, period=3)
    np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-6)
    assert np.all(w[:6][masks[:6]] == 1.0)   # w = 1 before two windows
    assert not np.allclose(w[-1][masks[-1]], 1.0)
  for bad in (0, 2.5):
    with pytest.raises((ValueError, TypeError)):
      wt.update(jnp.ones(T), wt.init(T), mask=jnp.ones(T, bool), step=0,
                key=None, lr=0.0, period=bad)


def test_rlw_on_the_simplex():
  mask = jnp.asarray([True, False, True, True])
  keys = jax.random.split(jax.random.PRNGKey(0), 2000)
  upd = jax.jit(jax.vmap(lambda k: wts.rlw.update(
      jnp.ones(4), (), mask=mask, step=0, key=k, lr=0.1)[0]))
  w = np.asarray(upd(keys))
  assert np.all(w[:, 1] == 0) and np.all(w[:, [0, 2, 3]] > 0)
  np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(w.mean(0)[[0, 2, 3]], 1 / 3, atol=0.01)
  assert not np.allclose(w[0], w[1])                     # other key
  np.testing.assert_array_equal(np.asarray(upd(keys[:2])), w[:2])  # same key
  with pytest.raises(ValueError):
    wts.rlw.update(jnp.ones(4), (), mask=mask, step=0, key=None, lr=0.1)


def toy_losses(theta, seed=0):
  """Positive per-task losses [T] of a parameter vector theta [5]."""
  rng = np.random.default_rng(seed)
  a = jnp.asarray(rng.normal(size=(T, 5)), theta.dtype)
  b = jnp.asarray(rng.normal(size=T), theta.dtype)
  return (a @ theta - b) ** 2 + 0.1


def test_gls_one_backward_is_the_geometric_mean_gradient():
  theta = jnp.asarray(np.random.default_rng(1).normal(size=5), jnp.float32)
  mask = jnp.asarray([True, True, False, True])

  def gm(th):
    l = toy_losses(th)[jnp.asarray([0, 1, 3])]
    return jnp.prod(l) ** (1 / 3)

  def weighted(th):
    l = toy_losses(th)
    w, _ = wts.gls.update(jax.lax.stop_gradient(l), (), mask=mask, step=0,
                          key=None, lr=0.1)
    return jnp.sum(w * jnp.where(mask, l, 0)), w

  (val, w), g = jax.value_and_grad(weighted, has_aux=True)(theta)
  np.testing.assert_allclose(val, gm(theta), rtol=1e-5)
  np.testing.assert_allclose(g, jax.grad(gm)(theta), rtol=1e-5, atol=1e-7)
  assert w[2] == 0
  # Equal losses: 1 / T' each; a zero loss: large but finite.
  w, _ = wts.gls.update(jnp.full(4, 2.5), (), mask=mask, step=0, key=None,
                        lr=0.1)
  np.testing.assert_allclose(w, [1 / 3, 1 / 3, 0, 1 / 3], rtol=1e-6)
  w, _ = wts.gls.update(jnp.asarray([0.0, 1.0, 1.0, 1.0]), (), mask=mask,
                        step=0, key=None, lr=0.1)
  assert np.all(np.isfinite(w)) and w[0] > 1e3


class NpFAMO:
  """The official FAMO (Cranial-XIX/FAMO famo.py) in numpy float64."""

  def __init__(self, n, w_lr=0.025, gamma=0.01):
    self.adam = NpAdam(n, w_lr, weight_decay=gamma)
    self.min_losses = np.zeros(n)

  def weights(self, losses):
    """d/dL of sum (z / c) log D with c = sum z / D held fixed."""
    self.prev = losses
    z = np_softmax(self.adam.p)
    d = losses - self.min_losses + 1e-8
    c = np.sum(z / d)
    return z / (c * d)

  def update(self, curr):
    delta = (np.log(self.prev - self.min_losses + 1e-8)
             - np.log(curr - self.min_losses + 1e-8))
    z = np_softmax(self.adam.p)
    jac = np.diag(z) - np.outer(z, z)        # d softmax / d w
    self.adam.step(jac.T @ delta, np.arange(len(z)))


def test_famo_vs_official_numpy():
  """Ten steps, the 'after' losses not 0.9 x the losses: weights and logits
  follow the reference; with task 2 absent throughout, FAMO on 4 tasks is
  FAMO on the 3 present ones (task 2's logit stays 0)."""
  k_steps = 10
  rng = np.random.default_rng(5)
  losses = rng.uniform(0.1, 2.0, (k_steps, T)).astype(np.float32)
  after = (losses * rng.uniform(0.5, 1.1, (k_steps, T))).astype(np.float32)
  wt = wts.famo

  @jax.jit
  def go(losses, after, mask, w_lr, gamma):
    def body(st, x):
      w, st = wt.update(x[0], st, mask=mask, step=0, key=None, lr=0.0,
                        w_lr=w_lr, gamma=gamma)
      st = wt.after(x[1], st, mask=mask, lr=0.0, w_lr=w_lr, gamma=gamma)
      return st, w
    return jax.lax.scan(body, wt.init(T), (losses, after))

  for present, w_lr, gamma in (([0, 1, 2, 3], 0.025, 0.01),
                               ([0, 1, 3], 0.1, 0.001)):
    mask = np.isin(np.arange(T), present)
    st, w = go(jnp.asarray(losses), jnp.asarray(after), jnp.asarray(mask),
               jnp.float32(w_lr), jnp.float32(gamma))
    ref = NpFAMO(len(present), w_lr, gamma)
    for k in range(k_steps):
      rw = ref.weights(losses[k, present].astype(np.float64))
      np.testing.assert_allclose(np.asarray(w)[k, present], rw, rtol=2e-5)
      ref.update(after[k, present].astype(np.float64))
    assert np.all(np.asarray(w)[:, ~mask] == 0)
    np.testing.assert_allclose(np.asarray(w).sum(1), 1.0, rtol=1e-6)
    logits = np.asarray(st.logits.param)
    np.testing.assert_allclose(logits[present], ref.adam.p, rtol=1e-4,
                               atol=1e-6)
    assert np.all(logits[~mask] == 0)
    assert np.max(np.abs(ref.adam.p)) > 0.05   # the logits really moved


def test_famo_weights_give_the_official_gradient():
  theta = jnp.asarray(np.random.default_rng(2).normal(size=5), jnp.float32)
  st = wts.famo.init(T)._replace(
      logits=wts.famo.init(T).logits._replace(
          param=jnp.asarray([0.3, -0.2, 0.5, 0.1])))
  mask = jnp.ones(T, bool)

  def official(th):
    l = toy_losses(th)
    z = jax.nn.softmax(st.logits.param)
    d = l + 1e-8
    c = jax.lax.stop_gradient(jnp.sum(z / d))
    return jnp.sum(jnp.log(d) * z / c)

  def weighted(th):
    l = toy_losses(th)
    w, _ = wts.famo.update(jax.lax.stop_gradient(l), st, mask=mask, step=0,
                           key=None, lr=0.0)
    return jnp.sum(w * l)

  np.testing.assert_allclose(jax.grad(weighted)(theta),
                             jax.grad(official)(theta), rtol=1e-5)


def test_famo_is_o1_in_tasks():
  """FAMO sees only the [T] losses: no array in its update or after has
  more than T elements (no per-task gradient, no T x P product)."""
  for name in ("update", "after"):
    assert "grads" not in inspect.signature(getattr(wts.famo, name)).parameters
  l = jnp.ones(T)
  mask = jnp.ones(T, bool)

  def both(l, st):
    w, st = wts.famo.update(l, st, mask=mask, step=0, key=None, lr=0.0)
    return w, wts.famo.after(0.5 * l, st, mask=mask, lr=0.0)

  jaxpr = jax.make_jaxpr(both)(l, wts.famo.init(T))

  def sizes(jx):
    for eqn in jx.eqns:
      for v in list(eqn.invars) + list(eqn.outvars):
        yield int(np.prod(getattr(v.aval, "shape", ())))
      for p in eqn.params.values():   # scan/cond/pjit bodies
        sub = getattr(p, "jaxpr", p)
        if hasattr(sub, "eqns"):
          yield from sizes(sub)

  assert max(sizes(jaxpr.jaxpr)) <= T


def test_uw_and_imtl_l_are_one_method_under_s_to_minus_s():
  # LibMTL's UW, e^-s L + s, is IMTL-L's e^s L - s with s -> -s; Adam is
  # odd-symmetric and both start at 0, so their weights agree at every step
  # (docs/METHODS.md; E7's uw and imtl_l arms train identically).
  uw = registry.WEIGHTINGS.get("uw")
  im = registry.WEIGHTINGS.get("imtl_l")
  su, si = uw.init(3), im.init(3)
  rng = np.random.default_rng(0)
  mask = jnp.array([True, True, False])
  for k in range(20):
    losses = jnp.asarray(rng.uniform(0.1, 3.0, 3), jnp.float32)
    wu, su = uw.update(losses, su, mask=mask, step=k, key=None, lr=1e-2)
    wi, si = im.update(losses, si, mask=mask, step=k, key=None, lr=1e-2)
    np.testing.assert_array_equal(np.asarray(wu), np.asarray(wi))


# ------------------------------------------------------------------ target


def _target_reference(losses, mask, task, share):
  """numpy: the target gets `share` of T' (the present count), the other
  present tasks split the rest; 1 each when the target is absent or alone."""
  w = np.zeros(mask.shape)
  for k in range(mask.shape[0]):
    present = np.flatnonzero(mask[k])
    n = len(present)
    aux = [t for t in present if t != task]
    for t in present:
      if task not in present or not aux:
        w[k, t] = 1.0
      elif t == task:
        w[k, t] = share * n
      else:
        w[k, t] = (1 - share) * n / len(aux)
  return w


@pytest.mark.parametrize("task,share", [(0, 0.5), (1, 0.8), (2, 0.25)])
def test_target_matches_numpy(task, share):
  losses, masks = rand_losses(), rand_masks()
  masks[2] = False
  masks[2, task] = True          # the target alone: weight 1
  masks[5, task] = False         # the target absent: 1 each
  w, _ = run("target", losses, masks, hp={"task": task, "share": share})
  np.testing.assert_allclose(np.asarray(w),
                             _target_reference(losses, masks, task, share),
                             rtol=1e-6)


def test_target_share_of_the_loss():
  """The defining property: with every task present, the target's weight
  is `share` of the total, and the auxiliary tasks weigh alike."""
  w, _ = run("target", rand_losses(), np.ones((K, T), bool),
             hp={"task": 3, "share": 0.6})
  w = np.asarray(w)
  np.testing.assert_allclose(w[:, 3] / w.sum(1), 0.6, rtol=1e-6)
  np.testing.assert_allclose(w[:, :3], w[:, :1].repeat(3, 1), rtol=1e-6)
