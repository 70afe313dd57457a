"""The compiled step: sharding, STL independence, vmapped runs, RNG, NaN guard."""

import jax
import numpy as np
import optax
import pytest

from mtljax import config as config_lib
from mtljax.core import parallel
from mtljax.core import step as step_lib
from tests.helpers import fake_batch, step_setup, train_steps

T = 4
SHAPE = (2, 2, 3)


def setup(**kw):
  s = step_setup(SHAPE, num_tasks=T, **kw)
  return s.prog, s.fn, s.state, s.specs, s.mesh


train = train_steps


def test_sharded_matches_single_device():
  assert jax.device_count() == 8
  batches = [fake_batch(i, 2, 16) for i in range(5)]
  _, fn1, s1, specs, mesh1 = setup(num_devices=1)
  _, fn8, s8, _, mesh8 = setup(num_devices=8)
  s1, m1 = train(fn1, s1, specs, batches, mesh1)
  s8, m8 = train(fn8, s8, specs, batches, mesh8)
  np.testing.assert_allclose(m1[-1]["loss"], m8[-1]["loss"], atol=1e-5)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  # The batch really was split over 8 devices.
  placed = parallel.global_batch(batches[0], mesh8)["image"]
  assert len(placed.sharding.device_set) == 8


def test_stl_network_ignores_other_tasks_labels():
  prog, fn, state0, specs, mesh = setup(modes=("stl",), num_devices=8)
  batches = [fake_batch(i, 2, 16) for i in range(4)]
  changed = []
  for b in batches:
    b = dict(b)
    b["labels"] = b["labels"].copy()
    b["labels"][..., 2] = 1 - b["labels"][..., 2]  # flip task 2 only
    changed.append(b)
  sa, _ = train(fn, state0, specs, batches, mesh)
  sb, _ = train(fn, state0, specs, changed, mesh)
  for g, group in enumerate(prog.groups):
    same = all(np.array_equal(a[:, g], b[:, g]) for a, b in
               zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params)))
    assert same == (group.tasks != [2]), (g, group)


def test_mtl_network_does_see_all_tasks():
  prog, fn, state0, specs, mesh = setup(modes=("mtl",))
  b = fake_batch(0, 2, 16)
  c = dict(b, labels=b["labels"].copy())
  c["labels"][..., 2] = 1 - c["labels"][..., 2]
  sa, _ = train(fn, state0, specs, [b], mesh)
  sb, _ = train(fn, state0, specs, [c], mesh)
  enc = lambda s: jax.tree.leaves(s.params["encoder"])[0]
  assert not np.array_equal(enc(sa), enc(sb))


def test_vmapped_seeds_equal_one_by_one():
  batches = [fake_batch(i, 3, 8) for i in range(4)]
  _, fn, state, specs, mesh = setup(seeds=(0, 1, 2), lrs=(1e-2, 3e-3))
  together, _ = train(fn, state, specs, batches, mesh)
  for s, seed in enumerate((0, 1, 2)):
    _, fn1, st1, specs1, _ = setup(seeds=(seed,), lrs=(1e-2, 3e-3))
    one = [{k: v[s:s + 1] for k, v in b.items()} for b in batches]
    alone, _ = train(fn1, st1, specs1, one, mesh)
    for a, b in zip(jax.tree.leaves(together.params),
                    jax.tree.leaves(alone.params)):
      np.testing.assert_allclose(a[s], b[0], rtol=1e-6, atol=1e-7)


def test_rng_depends_only_on_seed_and_step():
  _, fn, state, specs, mesh = setup(dropout=0.5)
  b = parallel.global_batch(fake_batch(0, 2, 8), mesh)
  a1, _ = fn(state, specs, b)
  a2, _ = fn(state, specs, b)
  later, _ = fn(state.replace(step=state.step + 7), specs, b)
  leaves = lambda s: jax.tree.leaves(s.params)
  assert all(np.array_equal(x, y) for x, y in zip(leaves(a1), leaves(a2)))
  assert not all(np.array_equal(x, y) for x, y in zip(leaves(a1), leaves(later)))


def test_nonfinite_step_keeps_state_and_reports():
  _, fn, state, specs, mesh = setup()
  b = fake_batch(0, 2, 8)
  b["image"][1, 0] = np.nan  # seed index 1 only
  new, m = fn(state, specs, parallel.global_batch(b, mesh))
  nonfinite = np.asarray(m["nonfinite"])
  assert nonfinite[1].all() and not nonfinite[0].any()
  for a, o in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a[1], o[1])
    assert not np.array_equal(a[0], o[0])


@pytest.mark.parametrize("policy", ["negative", "drop"])
def test_missing_policies(policy):
  labels = np.array([[1, 0], [1, 1]], np.float32)
  mask = np.array([[True, False], [True, True]])
  l, m, w = step_lib.apply_missing_policy(labels, mask, policy)
  if policy == "negative":
    assert np.asarray(m).all() and np.asarray(l)[0, 1] == 0
  else:
    np.testing.assert_array_equal(np.asarray(m), [[False, False], [True, True]])
    np.testing.assert_array_equal(np.asarray(w), [0, 1])


def test_learning_rate_scaling_equals_optax_rate():
  """Per-run lr × unit-rate updates == optax with that rate (adam)."""
  cfg = config_lib.default_config().optimizer
  tx = step_lib.make_optimizer(cfg, 10)
  ref = optax.adam(3e-3)
  p = {"w": np.ones(3, np.float32)}
  g = {"w": np.array([0.1, -0.2, 0.3], np.float32)}
  u, _ = tx.update(g, tx.init(p), p)
  r, _ = ref.update(g, ref.init(p), p)
  np.testing.assert_allclose(3e-3 * u["w"], r["w"], rtol=1e-6)


def test_missing_policies_differ_and_drop_equals_mask_on_complete_examples():
  b = fake_batch(3, 1, 64, p_obs=0.8)
  mesh = parallel.make_mesh(1)
  losses_by_policy = {}
  for policy in ("mask", "negative", "drop"):
    _, fn, st, specs, _ = setup(modes=("mtl",), seeds=(0,),
                                missing_policy=policy)
    _, m = fn(st, specs, parallel.global_batch(b, mesh))
    losses_by_policy[policy] = float(np.asarray(m["loss"])[0, 0])
  assert len(set(losses_by_policy.values())) == 3
  # "drop" is the masked loss on the examples without any "?".
  keep = b["mask"][0].all(-1)
  assert 5 < keep.sum() < 60
  complete = {k: v[:, keep] for k, v in b.items()}
  _, fn, st, specs, _ = setup(modes=("mtl",), seeds=(0,))
  _, m = fn(st, specs, parallel.global_batch(complete, mesh))
  np.testing.assert_allclose(losses_by_policy["drop"],
                             float(np.asarray(m["loss"])[0, 0]), rtol=1e-5)
