"""Present-task masks: every stateless aggregator with `mask` equals the
same aggregator on grads[mask] alone, whatever the absent rows hold.

Compilations are kept few: the masked calls use T = 4 and T = 5 (the mask
is traced, so every mask of a shape shares one compilation), the subsets
have 3 rows (1 for one present task), and P = 12 throughout.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtljax import methods
from mtljax import registry
from mtljax.methods import base
from mtljax.methods import gramian as gm

P = 12
KEY = jax.random.PRNGKey(3)
STATELESS = tuple(n for n in methods.aggregator_names()
                  if not isinstance(registry.AGGREGATORS.get(n),
                                    base.Aggregator))
# Random ones: GradDrop's uniforms depend only on the key and P, so the same
# key matches; PCGrad's orders are per-task permutations of all T tasks
# (compared with a numpy loop over the restricted orders below).
KEYED = ("pcgrad", "graddrop")
# (T, number present): 3 of 4 and 3 of 5 (three random masks each).
LAYOUTS = ((4, 3), (5, 3))


def rand_grads(t, seed=0, shared=0.5):
  rng = np.random.default_rng(seed)
  g = rng.normal(size=(t, P)) + shared * rng.normal(size=(1, P))
  return g.astype(np.float32)


def masks(t, k, n=3, seed=0):
  rng = np.random.default_rng(100 + 10 * t + k + seed)
  out = []
  for _ in range(n):
    m = np.zeros(t, bool)
    m[rng.choice(t, k, replace=False)] = True
    out.append(m)
  return out


def poison(g, m, seed):
  """g with the absent rows set to NaN, inf or huge values."""
  g = g.copy()
  fill = (np.nan, np.inf, -1e30)[seed % 3]
  g[~m] = fill
  return g


def call(name, g, **kw):
  if name in KEYED:
    kw.setdefault("key", KEY)
  return np.asarray(methods.aggregate(name, jnp.asarray(g), **kw))


def tol(name):
  # CAGrad's float32 dual is flat near its optimum (see its tests); the
  # others agree to rounding.
  return 5e-3 if name == "cagrad" else 2e-5


def test_every_aggregator_takes_a_mask():
  import inspect  # pylint: disable=g-import-not-at-top
  for name in STATELESS:
    assert "mask" in inspect.signature(registry.AGGREGATORS.get(name)).parameters


@pytest.mark.parametrize("name", [n for n in STATELESS if n != "pcgrad"])
def test_mask_equals_subset(name):
  for seed, (t, k) in enumerate(LAYOUTS):
    g = rand_grads(t, seed=seed)
    for m in masks(t, k, seed=seed):
      d = call(name, poison(g, m, seed), mask=m)
      ref = call(name, g[m])
      scale = np.abs(ref).max() + 1e-12
      np.testing.assert_allclose(d, ref, atol=tol(name) * scale,
                                 err_msg=f"{name} {m}")


@pytest.mark.parametrize("name", STATELESS)
def test_zero_and_one_present(name):
  g = rand_grads(4, seed=9)
  for seed in range(3):
    none = np.zeros(4, bool)
    d = call(name, poison(g, none, seed), mask=none)
    np.testing.assert_array_equal(d, 0)
    for i in range(4):
      one = np.eye(4, dtype=bool)[i]
      d = call(name, poison(g, one, seed), mask=one)
      assert np.all(np.isfinite(d)), (name, i)
      if name == "cagrad":  # its T = 1 formula: g (1 + c) / (1 + c^2)
        np.testing.assert_allclose(d, g[i] * 1.5 / 1.25, rtol=1e-5)
      elif name == "nash_mtl":  # to the ridge's 1e-6 relative
        np.testing.assert_allclose(d, g[i], rtol=1e-5)
      else:
        np.testing.assert_array_equal(d, g[i])


@functools.partial(jax.jit, static_argnums=1)
def _orders(key, t):
  keys = jax.random.split(key, t)
  return jax.vmap(lambda k: jax.random.permutation(k, t))(keys)


def np_pcgrad_masked(g, m, order):
  """PCGrad on the present tasks, each visiting the others in its order."""
  g = g.astype(np.float64)
  pc = g.copy()
  for i in np.flatnonzero(m):
    for j in order[i]:
      if j == i or not m[j]:
        continue
      dot = pc[i] @ g[j]
      if dot < 0:
        pc[i] -= dot / (g[j] @ g[j]) * g[j]
  return pc[m].sum(0)


def test_pcgrad_mask():
  for seed, (t, k) in enumerate(LAYOUTS):
    g = rand_grads(t, seed=seed, shared=0.0)
    for m in masks(t, k, seed=seed):
      d = call("pcgrad", poison(g, m, seed), mask=m)
      ref = np_pcgrad_masked(g, m, np.asarray(_orders(KEY, t)))
      np.testing.assert_allclose(d, ref, rtol=1e-4, atol=1e-4)
  # The fixed order (key=None) restricted to the present tasks is the
  # subset's fixed order: exactly the subset's PCGrad.
  g = rand_grads(4, seed=1, shared=0.0)
  m = np.array([True, False, True, True])
  np.testing.assert_allclose(call("pcgrad", poison(g, m, 0), mask=m, key=None),
                             call("pcgrad", g[m], key=None), rtol=1e-6)


def test_mgda_options_and_mask():
  g = rand_grads(4, seed=11)
  losses = np.array([2.0, 0.5, 1.0, 4.0], np.float32)
  nrm = np.linalg.norm(g.astype(np.float64), axis=1)
  for normalize, n in (("l2", nrm), ("loss", losses), ("loss+", losses * nrm)):
    d = call("mgda", g, losses=losses, normalize=normalize)
    # Weights from the normalised gradients, applied to the raw ones.
    gn = g / n[:, None].astype(np.float32)
    alpha = np.asarray(gm.min_norm_weights(gm.gramian(gn)))
    np.testing.assert_allclose(d, alpha @ g, rtol=1e-4,
                               atol=1e-5 * np.abs(g).max())
    if normalize == "loss+":
      m = np.array([True, True, False, True])
      bad_l = losses.copy()
      bad_l[2] = np.nan
      dm = call("mgda", poison(g, m, 0), mask=m, losses=bad_l,
                normalize=normalize)
      np.testing.assert_allclose(
          dm, call("mgda", g[m], losses=losses[m], normalize=normalize),
          rtol=1e-4, atol=1e-5 * np.abs(g).max())
  with pytest.raises(ValueError, match="losses"):
    call("mgda", g, normalize="loss")
  with pytest.raises(ValueError, match="normalize"):
    call("mgda", g, normalize="bogus")
  # base.stateless passes the step's losses to aggregators that take them.
  agg = methods.get_aggregator("mgda_ub")
  d, _ = agg.update(jnp.asarray(g), agg.init(4), losses=jnp.asarray(losses),
                    normalize="loss")
  np.testing.assert_allclose(np.asarray(d),
                             call("mgda", g, losses=losses, normalize="loss"),
                             rtol=1e-6)


def test_mask_under_vmap_over_runs():
  # A different mask per run: one compilation, each row its own subset.
  g = rand_grads(4, seed=12)
  ms = np.array([[1, 1, 0, 1], [0, 1, 1, 0], [1, 1, 1, 1]], bool)
  out = jax.jit(jax.vmap(lambda m: methods.aggregate("upgrad", g, mask=m)))(
      jnp.asarray(ms))
  for m, row in zip(ms, np.asarray(out)):
    np.testing.assert_allclose(row, call("upgrad", g[m]), rtol=1e-4,
                               atol=1e-5)
