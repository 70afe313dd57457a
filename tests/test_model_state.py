"""Non-parameter model state (BatchNorm's statistics) through every path.

The CNN with `encoder_kwargs.norm="batch"`: its running statistics are split
from the parameters, move in training (only on finite steps), are used in
evaluation, are checkpointed and restored exactly, and agree under every
run map.
"""

import json
import os

import jax
import numpy as np
import pytest

from mtljax import data as data_lib
from mtljax import models
from mtljax.core import parallel
from mtljax.core import run_map as run_map_lib
from mtljax.run import checkpoint as ckpt_lib
from mtljax.run import evaluate
from mtljax.run import train
from tests import helpers
from tests.helpers import fake_batch, step_setup, tiny_model_cfg
from tests.test_e2e import smoke_config

SHAPE = (4, 4, 3)
BN = {"norm": "batch"}


def _bn_stats(model_state):
  """{layer: (mean, var)} of stacked or single BatchNorm state."""
  norms = model_state["encoder"]["norms"]
  return {k: (np.asarray(v["mean"]), np.asarray(v["var"]))
          for k, v in norms.items()}


# ------------------------------------------------------------- the model.


def test_batchnorm_state_is_split_from_params_and_moves_only_in_training():
  cfg = tiny_model_cfg("cnn", 3, 2)
  cfg.encoder_kwargs = dict(BN)
  graphdef, params, model_state = models.create(cfg, (8, 8, 3), 4,
                                                jax.random.key(0))
  stats = _bn_stats(model_state)
  assert len(stats) == 2
  for mean, var in stats.values():
    np.testing.assert_array_equal(mean, 0.0)
    np.testing.assert_array_equal(var, 1.0)
  # Scale and bias are parameters; a conv before a BatchNorm has no bias.
  assert set(params["encoder"]["norms"][0]) == {"scale", "bias"}
  assert set(params["encoder"]["convs"][0]) == {"kernel"}
  # The abstract graphdef (what the step uses) agrees with the built one.
  assert models.graphdef(cfg, (8, 8, 3), 4) == graphdef

  x = np.random.default_rng(0).normal(1.0, 2.0, (6, 8, 8, 3)).astype(
      np.float32)
  train_logits, moved = models.apply(graphdef, params, model_state, x,
                                     deterministic=False)
  eval_logits, same = models.apply(graphdef, params, model_state, x)
  assert jax.tree.structure(moved) == jax.tree.structure(model_state)
  for (m0, v0), (m1, v1) in zip(stats.values(), _bn_stats(moved).values()):
    assert not np.allclose(m0, m1) and not np.allclose(v0, v1)
  for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(model_state)):
    np.testing.assert_array_equal(a, b)
  # Batch statistics (training) and running ones (evaluation) differ.
  assert not np.allclose(train_logits, eval_logits, atol=1e-3)


def test_models_without_batchnorm_have_no_model_state():
  for encoder in ("mlp", "cnn"):
    _, _, model_state = models.create(tiny_model_cfg(encoder, 4, 2),
                                      (8, 8, 3), 4, jax.random.key(0))
    assert not jax.tree.leaves(model_state)


# -------------------------------------------------------------- the step.


def test_run_maps_agree_and_a_nonfinite_step_keeps_the_statistics():
  batches = [fake_batch(i, 2, 8, SHAPE) for i in range(3)]
  batches[1]["image"][1, 0] = np.nan  # seed 1's runs skip step 1
  states = {}
  for run_map in run_map_lib.RUN_MAPS:
    s = step_setup(SHAPE, run_map=run_map, encoder="cnn", encoder_kwargs=BN)
    state, history = s.state, [s.state]
    for b in batches:
      state, _ = s.fn(state, s.specs, parallel.global_batch(b, s.mesh))
      history.append(state)
    states[run_map] = history
    # Seed 1's step 1 was skipped: its statistics are those after step 0;
    # seed 0's moved.
    after0, after1 = (_bn_stats(history[i].model_state) for i in (1, 2))
    for (m0, v0), (m1, v1) in zip(after0.values(), after1.values()):
      np.testing.assert_array_equal(m1[1], m0[1])
      np.testing.assert_array_equal(v1[1], v0[1])
      assert not np.allclose(m1[0], m0[0])
    assert all(np.isfinite(x).all()
               for x in jax.tree.leaves(history[-1].model_state))
  for other in ("scan", "unroll"):
    for a, b in zip(jax.tree.leaves(states["vmap"][-1]),
                    jax.tree.leaves(states[other][-1])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_eval_uses_the_model_state_under_every_run_map():
  s = step_setup(SHAPE, encoder="cnn", encoder_kwargs=BN)
  state, _ = s.fn(s.state, s.specs,
                  parallel.global_batch(fake_batch(0, 2, 8, SHAPE), s.mesh))
  images = np.random.default_rng(1).normal(size=(6,) + SHAPE).astype(
      np.float32)
  from mtljax.core import step as step_lib  # pylint: disable=g-import-not-at-top
  out = {m: np.asarray(step_lib.make_eval_fn(s.graphdef, s.mesh, m)(
      state.params, state.model_state, images)) for m in run_map_lib.RUN_MAPS}
  for m in ("scan", "unroll"):
    np.testing.assert_allclose(out["vmap"], out[m], rtol=1e-5, atol=1e-6)
  initial = step_lib.make_eval_fn(s.graphdef, s.mesh)(
      state.params, s.model_state, images)
  assert not np.allclose(out["vmap"], initial, atol=1e-4)


# ------------------------------------------------------ train_and_evaluate.


def _bn_config(*overrides):
  return smoke_config("model.encoder='cnn'", "model.width=2", "model.depth=2",
                      "model.encoder_kwargs.norm='batch'", "modes=('mtl',)",
                      *overrides)


def _programs(monkeypatch) -> list:
  """The _Program objects of the next train_and_evaluate, as they end."""
  made, real = [], train._Program.__init__  # pylint: disable=protected-access

  def init(self, *args, **kwargs):
    real(self, *args, **kwargs)
    made.append(self)

  monkeypatch.setattr(train._Program, "__init__", init)  # pylint: disable=protected-access
  return made


@pytest.fixture(scope="module")
def scan_run(smoke_data_dir, tmp_path_factory):
  """A BatchNorm CNN trained with the "scan" run map: (config, results,
  final _Program)."""
  cfg = _bn_config("train.run_map='scan'")
  with pytest.MonkeyPatch.context() as mp:
    made = _programs(mp)
    res = train.train_and_evaluate(cfg, str(tmp_path_factory.mktemp("scan")))
  (prog,) = made
  return cfg, res, prog


def test_batchnorm_trains_and_evaluation_uses_running_statistics(scan_run):
  cfg, res, p = scan_run
  state = p.state
  for field in (state.model_state, state.best_model_state):
    for mean, var in _bn_stats(field).values():
      assert mean.shape[:2] == (2, 1)         # [S, G]: each run its own
      assert not np.allclose(mean, 0.0) and not np.allclose(var, 1.0)

  images, labels, mask = data_lib.eval_arrays(
      cfg.data.name, "test", split_sizes=tuple(cfg.data.split_sizes))
  images, labels, mask = (a[:cfg.data.eval_examples]
                          for a in (images, labels, mask))
  names = res["dataset"]["task_names"]
  mesh = parallel.make_mesh(jax.device_count())
  ev = evaluate.Evaluator(p.eval_fn, images, labels, mask, names, mesh)
  per_run = ev.metrics(state.best_params, state.best_model_state)
  # results.json's test metrics are those of best_model_state's statistics.
  for s, seed in enumerate((0, 1)):
    (run,) = [r for r in res["runs"] if r["seed"] == seed]
    for t in names:
      assert run["test"]["per_task"][t]["loss"] == pytest.approx(
          per_run[s][0]["per_task"][t]["loss"], rel=1e-6)
  # ... and not of the batch's statistics.
  graphdef = models.graphdef(p.prog.model_cfg, images.shape[1:], len(names))
  x = images[:64]
  batch_stats = jax.jit(jax.vmap(jax.vmap(
      lambda prm, ms: models.apply(graphdef, prm, ms, x,
                                   deterministic=False)[0])))(
                                       state.best_params,
                                       state.best_model_state)
  running = ev.logits(state.best_params, state.best_model_state)[:, :, :64]
  assert not np.allclose(running, batch_stats, atol=1e-3)


def test_vmap_and_scan_runs_agree(scan_run, tmp_path):
  cfg, scanned, _ = scan_run
  vmapped = train.train_and_evaluate(
      _bn_config("train.run_map='vmap'"), str(tmp_path / "vmap"))
  for a, b in zip(scanned["runs"], vmapped["runs"]):
    assert a["best_step"] == b["best_step"]
    for split in ("val", "test"):
      for t, m in a[split]["per_task"].items():
        np.testing.assert_allclose(m["loss"], b[split]["per_task"][t]["loss"],
                                   rtol=1e-4)


def test_batch_statistics_are_checkpointed_and_resume_is_exact(
    smoke_data_dir, tmp_path, monkeypatch):
  cfg = _bn_config("train.steps=8", "train.eval_every=2",
                   "train.checkpoint_every=4", "model.dropout=0.3")
  full = train.train_and_evaluate(cfg, str(tmp_path / "full"))

  # Interrupted after step 6 (past the checkpoint at 4): steps 5-6 redone.

  wd = tmp_path / "resumed"
  with pytest.raises(helpers.Stop), helpers.interrupted_at(monkeypatch, 6):
    train.train_and_evaluate(cfg, str(wd))
  assert sorted(os.listdir(wd / "checkpoints")) == ["4"]

  # The checkpoint holds the statistics of step 4: moved from their initial
  # 0 and 1, so read from disk (the abstract state has only shapes).
  restored = []
  real_restore = ckpt_lib.Checkpointer.restore_latest

  def restore_latest(self, abstract):
    out = real_restore(self, abstract)
    restored.append(jax.device_get(out))  # a copy: the step donates the state
    return out

  monkeypatch.setattr(ckpt_lib.Checkpointer, "restore_latest", restore_latest)
  resumed = train.train_and_evaluate(cfg, str(wd))
  ((states, meta),) = restored
  assert meta["step"] == 4
  (state,) = states.values()
  for field in (state.model_state, state.best_model_state):
    for mean, var in _bn_stats(field).values():
      assert np.isfinite(mean).all()
      assert not np.allclose(mean, 0.0) and not np.allclose(var, 1.0)
  assert json.dumps(full["runs"], sort_keys=True) == json.dumps(
      resumed["runs"], sort_keys=True)
