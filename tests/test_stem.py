"""The fused first convolution (core/stem.py) against the plain "scan" step.

The reference is the plain step: the same runs, the same batches, each run's
first convolution its own. Fused and plain must agree up to float rounding in
params, optimizer state and every metric, with dropout,
the "drop" policy, average pooling, a non-finite run, and on 8 sharded
devices.
"""

import jax
import numpy as np
import pytest

from mtljax import config as config_lib
from mtljax.core import stem
from tests.helpers import fake_batch, step_setup, train_steps

SHAPE = (8, 8, 3)
BATCHES = [fake_batch(i, 2, 16, SHAPE) for i in range(2)]


def max_diff(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  return max((float(np.max(np.abs(np.asarray(x, np.float64)
                                  - np.asarray(y, np.float64))))
              for x, y in zip(la, lb)), default=0.0)


def both(batches=BATCHES, **kw):
  out = {}
  for fuse in (False, True):
    s = step_setup(SHAPE, encoder="cnn", run_map="scan", fuse_stem=fuse, **kw)
    out[fuse] = train_steps(s.fn, s.state, s.specs, batches, s.mesh)
  return out[False], out[True]


@pytest.mark.parametrize("kw", [
    # Dropout, the "drop" rescale, two learning rates.
    {"dropout": 0.3, "missing_policy": "drop", "lrs": (1e-2, 3e-3)},
    # Static task weights under the per-task loss, with SGD; average pool.
    {"task_weights": (1.0, 2.0, 0.5, 1.0), "normalize": "per_task",
     "optimizer": "sgd", "modes": ("mtl",), "lrs": (1e-2, 3e-3),
     "encoder_kwargs": {"pool": "avg"}},
    # share_k: the first stage shared, the second one per task; and k =
    # depth (all shared, the hps network in share_k's parameter tree).
    {"arch": "share_k", "arch_kwargs": {"shared_stages": 1}, "dropout": 0.3},
    {"arch": "share_k", "arch_kwargs": {"shared_stages": 2}},
])
def test_fused_step_equals_the_plain_scan(kw):
  (ref, ref_m), (got, got_m) = both(**kw)
  assert max_diff(ref.params, got.params) < 1e-5
  assert max_diff(ref.opt_state, got.opt_state) < 1e-5
  assert max_diff(ref_m, got_m) < 1e-4
  # The params moved: a step that did nothing would also "agree".
  s = step_setup(SHAPE, encoder="cnn", run_map="scan", **kw)
  assert max_diff(s.state.params, got.params) > 1e-4


def test_the_stem_gradient_is_each_runs_own_and_a_nonfinite_run_is_kept():
  # Two seeds x MTL + 4 STL; seed 1's batch has a NaN, so its runs keep
  # their state while seed 0's step.
  batches = [dict(b, image=b["image"].copy()) for b in BATCHES[:1]]
  batches[0]["image"][1, 0, 0, 0, 0] = np.nan
  (ref, ref_m), (got, got_m) = both(batches)
  np.testing.assert_array_equal(np.asarray(got_m[0]["nonfinite"]),
                                np.asarray(ref_m[0]["nonfinite"]))
  assert np.asarray(got_m[0]["nonfinite"])[1].all()
  assert not np.asarray(got_m[0]["nonfinite"])[0].any()
  s = step_setup(SHAPE, encoder="cnn", run_map="scan")
  init_k = np.asarray(s.state.params["encoder"]["convs"][0]["kernel"])
  got_k = np.asarray(got.params["encoder"]["convs"][0]["kernel"])
  np.testing.assert_array_equal(got_k[1], init_k[1])
  assert max_diff(ref.params, got.params) < 1e-5
  # Every run of seed 0 moved its first kernel differently (a gradient
  # summed or mixed over the runs of a seed would not).
  moved = got_k[0] - init_k[0]                       # [G, ...]
  flat = moved.reshape(len(moved), -1)
  dists = np.abs(flat[:, None] - flat[None]).max(-1)
  assert (dists + np.eye(len(flat)) > 1e-6).all()


def test_fusable_networks():
  m = config_lib.default_config().model
  m.encoder = "cnn"
  assert stem.fusable(m)
  m.dtype = "bfloat16"
  assert not stem.fusable(m)
  m.dtype, m.encoder_kwargs = "float32", {"norm": "batch"}
  assert not stem.fusable(m)
  m.encoder_kwargs = {"pool": "avg"}
  assert stem.fusable(m)
  m.dtype, m.arch = "float32", "mmoe"
  assert not stem.fusable(m)
  m.arch, m.arch_kwargs = "share_k", {"shared_stages": 1}
  assert stem.fusable(m)
  m.arch_kwargs = {"shared_stages": 0}   # every task its own first stage
  assert not stem.fusable(m)
  m.arch, m.encoder = "hps", "mlp"
  assert not stem.fusable(m)


def test_fuse_stem_is_a_cosmetic_field():
  # Turning the fusion off must not make a finished workdir "another
  # config's": it changes how a step is computed, not what.
  assert "train.fuse_stem" in config_lib.COSMETIC_FIELDS


def test_sharded_fused_step_equals_single_device():
  # 8 forced CPU devices (tests/conftest.py): the batch's 16 examples split
  # over "data"; the wide convolution and its gradient see the whole batch.
  assert len(jax.devices()) >= 8
  out = {}
  for n in (1, 8):
    s = step_setup(SHAPE, encoder="cnn", run_map="scan", fuse_stem=True,
                   num_devices=n)
    out[n] = train_steps(s.fn, s.state, s.specs, BATCHES, s.mesh)
  assert max_diff(out[1][0].params, out[8][0].params) < 1e-5
  assert max_diff(out[1][1], out[8][1]) < 1e-4


@pytest.mark.parametrize("kw", [
    {}, {"arch": "share_k", "arch_kwargs": {"shared_stages": 1}}])
def test_fused_eval_equals_the_plain_scan_eval(kw):
  from mtljax.core import step as step_lib  # pylint: disable=g-import-not-at-top
  (_, _), (got, _) = both(**kw)
  s = step_setup(SHAPE, encoder="cnn", run_map="scan", **kw)
  images = fake_batch(9, 1, 24, SHAPE)["image"][0]
  out = [np.asarray(step_lib.make_eval_fn(s.graphdef, s.mesh, "scan",
                                          fuse_stem=f)(
      got.params, got.model_state, images)) for f in (False, True)]
  assert out[0].shape == out[1].shape == (2, 5, 24, 4)
  np.testing.assert_allclose(out[1], out[0], rtol=1e-5, atol=1e-5)


def test_a_wide_stage_too_large_takes_the_plain_loop(monkeypatch):
  # Above MAX_WIDE_BYTES (checked when traced) step and evaluation are the
  # plain per-run scan: bit for bit, not merely close.
  from mtljax.core import step as step_lib  # pylint: disable=g-import-not-at-top
  s = step_setup(SHAPE, encoder="cnn", run_map="scan")
  assert stem.fits(s.state.params, (16,) + SHAPE)
  monkeypatch.setattr(stem, "MAX_WIDE_BYTES", 0)
  assert not stem.fits(s.state.params, (16,) + SHAPE)
  (ref, ref_m), (got, got_m) = both(BATCHES[:1])
  assert max_diff(ref.params, got.params) == 0
  assert max_diff(ref_m, got_m) == 0
  images = fake_batch(9, 1, 24, SHAPE)["image"][0]
  out = [np.asarray(step_lib.make_eval_fn(s.graphdef, s.mesh, "scan",
                                          fuse_stem=f)(
      got.params, got.model_state, images)) for f in (False, True)]
  np.testing.assert_array_equal(out[0], out[1])
