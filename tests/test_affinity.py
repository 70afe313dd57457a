"""TAG's lookahead affinity (core/affinity.py) against a direct computation.

Defining property (Fifty et al. 2021): Z[i→j] = 1 − L_j(θ_s − η∇_s L_i, θ_j)
/ L_j(θ_s, θ_j) on the same batch, for the shared parameters θ_s only. The
reference below takes each task's gradient with its own jax.grad (no VJP
rows), steps the shared leaves by hand and recomputes the losses with numpy.
"""

import numpy as np
import pytest
import jax
import jax.numpy as jnp

from mtljax import models
from mtljax.core import affinity
from mtljax.core import parallel
from mtljax.core import state as state_lib
from tests import helpers


def _losses_np(logits, labels, mask):
  """Each task's mean logistic loss over its observed labels (numpy)."""
  z = np.asarray(logits, np.float64)
  elem = np.maximum(z, 0) - z * labels + np.log1p(np.exp(-np.abs(z)))
  elem = np.where(mask, elem, 0.0)
  return elem.sum(0) / np.maximum(mask.sum(0), 1)


def _reference(gd, params, model_state, batch, task_mask, lr):
  mask = batch["mask"] & (task_mask[None, :] > 0)
  labels = np.where(mask, batch["labels"], 0.0)

  def loss_t(p, t):
    logits, _ = models.apply(gd, p, model_state, batch["image"])
    z = logits[:, t]
    elem = jnp.maximum(z, 0) - z * labels[:, t] + jnp.log1p(jnp.exp(-jnp.abs(z)))
    m = mask[:, t]
    return jnp.sum(jnp.where(m, elem, 0.0)) / max(m.sum(), 1)

  def losses_at(p):
    logits, _ = models.apply(gd, p, model_state, batch["image"])
    return _losses_np(logits, labels, mask)

  before = losses_at(params)
  num_tasks = labels.shape[1]
  z = np.full((num_tasks, num_tasks), np.nan)
  for i in range(num_tasks):
    g = jax.grad(loss_t)(params, i)
    # Shared: the encoder; out_w and out_b are the T heads.
    moved = jax.tree_util.tree_map_with_path(
        lambda path, x, gx: x if "out_" in jax.tree_util.keystr(path)
        else x - lr * gx, params, g)
    after = losses_at(moved)
    for j in range(num_tasks):
      if mask[:, i].any() and mask[:, j].any():
        z[i, j] = 1.0 - after[j] / before[j]
  return z


@pytest.mark.parametrize("run_map", ["vmap", "scan"])
def test_affinity_matches_direct_lookahead_for_every_run(run_map):
  s = helpers.step_setup((2, 2, 3), modes=("mtl", "stl"), seeds=(0, 1),
                         lrs=(0.3,), run_map=run_map)
  batch = helpers.fake_batch(1, 2, 16, t=4, p_obs=0.8)
  batch["mask"][:, :, 3] = False      # task 3 unobserved: its row/col NaN
  mesh = parallel.make_mesh(1)
  groups = [g for g, gr in enumerate(s.prog.groups) if gr.mode == "mtl"]
  fn = affinity.make_affinity_fn(s.graphdef, mesh=mesh, groups=groups,
                                 run_map=run_map)
  acc = fn(affinity.init_acc(2, len(groups), 4), s.state, s.specs,
           parallel.global_batch(batch, mesh))
  got = affinity.mean_affinity(jax.device_get(acc))
  for si in range(2):
    for k, g in enumerate(groups):
      params = jax.tree.map(lambda x: np.asarray(x[si, g]), s.state.params)
      ms = jax.tree.map(lambda x: np.asarray(x[si, g]), s.state.model_state)
      one = {k2: v[si] for k2, v in batch.items()}
      want = _reference(s.graphdef, params, ms, one,
                        np.asarray(s.prog.groups[g].task_mask), 0.3)
      np.testing.assert_allclose(got[si, k], want, rtol=2e-3, atol=2e-6)
      assert np.isnan(got[si, k][3]).all() and np.isnan(got[si, k][:, 3]).all()
      # A step on task i lowers task i's own loss (a small enough step).
      assert np.all(np.diag(got[si, k])[:3] > 0)
  assert np.asarray(acc["count"])[..., :3, :3].min() == 1


def test_lookahead_lr_overrides_the_runs_rate_and_counts_accumulate():
  s = helpers.step_setup((2, 2, 3), modes=("mtl",), seeds=(0,), lrs=(1e-2,))
  mesh = parallel.make_mesh(1)
  batch = parallel.global_batch(helpers.fake_batch(2, 1, 16, t=4, p_obs=1.0),
                                mesh)
  small = affinity.make_affinity_fn(s.graphdef, mesh=mesh, groups=[0])
  big = affinity.make_affinity_fn(s.graphdef, mesh=mesh, groups=[0],
                                  lookahead_lr=0.5)
  acc = small(affinity.init_acc(1, 1, 4), s.state, s.specs, batch)
  acc = small(acc, s.state, s.specs, batch)
  z_small = affinity.mean_affinity(jax.device_get(acc))
  assert np.asarray(acc["count"]).min() == 2   # two measurements counted
  z_big = affinity.mean_affinity(jax.device_get(
      big(affinity.init_acc(1, 1, 4), s.state, s.specs, batch)))
  # To first order Z is proportional to the step: 50x the rate, ~50x Z.
  ratio = np.diag(z_big[0, 0]) / np.diag(z_small[0, 0])
  assert np.all((ratio > 20) & (ratio < 60)), ratio
