"""Tiny models, fake batches, compiled steps and configs shared by the tests."""

import types

import numpy as np

from mtljax import config as config_lib
from mtljax.core import parallel
from mtljax.core import runs
from mtljax.core import state as state_lib
from mtljax.core import stem
from mtljax.core import step as step_lib


def tiny_model_cfg(encoder="mlp", width=8, depth=2, dropout=0.0):
  m = config_lib.default_config().model
  m.encoder, m.width, m.depth, m.dropout = encoder, width, depth, dropout
  return m


def fake_batch(seed, s, b, image_shape=(2, 2, 3), t=4, p_obs=0.7):
  rng = np.random.default_rng(seed)
  return {
      "image": rng.normal(size=(s, b) + tuple(image_shape)).astype(np.float32),
      "labels": rng.integers(0, 2, (s, b, t)).astype(np.float32),
      "mask": rng.random((s, b, t)) < p_obs,
  }


def step_setup(shape, *, num_tasks=4, modes=("mtl", "stl"), seeds=(0, 1),
               lrs=(1e-2,), dropout=0.0, num_devices=1, missing_policy="mask",
               run_map="vmap", encoder="mlp", dtype="float32",
               encoder_kwargs=None, method=None, normalize="per_example",
               task_weights=(), optimizer="adam", arch="hps",
               arch_kwargs=None, fuse_stem=False, width=None, norm=None,
               depth=2):
  """A tiny program's compiled train step and initial state.

  Returns:
    A namespace with prog, fn, state, specs, mesh, graphdef, params and
    model_state.
  """
  cfg = config_lib.default_config()
  cfg.model = tiny_model_cfg(
      encoder, width or (8 if encoder == "mlp" else 2), depth, dropout=dropout)
  if norm:
    cfg.model.encoder_kwargs = {"norm": norm}
  cfg.model.dtype = dtype
  if encoder_kwargs:
    cfg.model.encoder_kwargs = dict(encoder_kwargs)
  cfg.model.arch = arch
  if arch_kwargs:
    cfg.model.arch_kwargs = dict(arch_kwargs)
  cfg.modes, cfg.optimizer.learning_rates = modes, lrs
  cfg.optimizer.name = optimizer
  cfg.loss.missing_policies = (missing_policy,)
  cfg.loss.normalize = normalize
  cfg.loss.task_weights = tuple(task_weights)
  for key, value in (method or {}).items():
    cfg.method[key] = value
  cfg = config_lib.validate(cfg)
  progs = runs.build_programs(cfg, shape, num_tasks)
  # With a method, STL groups train in a program of their own (classic
  # step); the tests step one program: the method's, if there is one.
  prog = progs[-1]
  tx = step_lib.make_optimizer(cfg.optimizer, 10)
  graphdef, params, model_state = state_lib.init_params(
      cfg.model, shape, num_tasks, seeds, prog.num_groups)
  mesh = parallel.make_mesh(num_devices)
  spec = prog.method if prog.uses_method else None
  fn = step_lib.make_train_step(graphdef, tx, normalize=normalize,
                                mesh=mesh, donate=False, run_map=run_map,
                                method=spec,
                                fuse_stem=fuse_stem and stem.fusable(cfg.model))
  return types.SimpleNamespace(
      prog=prog, fn=fn, config=cfg,
      state=state_lib.init_state(params, model_state, tx, spec, num_tasks),
      specs=prog.specs(list(seeds)), mesh=mesh, graphdef=graphdef,
      params=params, model_state=model_state)


def train_steps(fn, state, specs, batches, mesh):
  """Runs `fn` over host batches; returns the final state and the metrics."""
  ms = []
  for b in batches:
    state, m = fn(state, specs, parallel.global_batch(b, mesh))
    ms.append(m)
  return state, ms


class FakeSource:
  """Stands in for a data source (e.g. one with corrupt records)."""

  def __init__(self, records):
    self.records = records

  def __len__(self):
    return len(self.records)

  def __getitems__(self, keys):
    return [self.records[k] for k in keys]


class Stop(Exception):
  """Raised by `interrupted_at`'s batch feed: a run killed mid-training."""


def interrupted_at(monkeypatch, step: int):
  """Context: training raises Stop when it asks for the batch of `step`.

  Use `with pytest.raises(Stop), interrupted_at(mp, 6): train(...)`; the
  real feed is back once the block exits, so the same command then resumes.
  """
  import contextlib  # pylint: disable=g-import-not-at-top
  from mtljax.data import pipeline  # pylint: disable=g-import-not-at-top
  real = pipeline.TrainPipeline.batches

  def stopping(self, start):
    for i, b in enumerate(real(self, start)):
      if start + i == step:
        raise Stop()
      yield b

  @contextlib.contextmanager
  def patched():
    monkeypatch.setattr(pipeline.TrainPipeline, "batches", stopping)
    try:
      yield
    finally:
      monkeypatch.setattr(pipeline.TrainPipeline, "batches", real)
  return patched()
