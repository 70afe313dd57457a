"""The train step with MTL methods (core/method_step.py).

Against the classic step as the reference: "sum" over per-task gradients is
the classic gradient, rep_grad with "sum" too; STL is untouched bit for bit;
absent tasks contribute nothing; sharded = single device; per-run
hyperparameters = separate runs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtljax import config as config_lib
from mtljax import methods
from mtljax import models
from mtljax.core import method_step
from mtljax.core import runs
from tests.helpers import fake_batch, step_setup, train_steps

SHAPE = (2, 2, 3)
BATCHES = [fake_batch(i, 2, 16) for i in range(3)]


def params_of(setup_kw, batches=BATCHES):
  s = step_setup(SHAPE, **setup_kw)
  state, metrics = train_steps(s.fn, s.state, s.specs, batches, s.mesh)
  return s, state, metrics


def max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("method,policy", [
    ({"aggregator": "sum"}, "drop"),
    ({"aggregator": "sum", "rep_grad": True}, "drop"),
])
def test_sum_of_task_gradients_is_the_classic_gradient(method, policy):
  # Two seeds x two learning rates, vmapped: the "drop" policy's rescale
  # depends on both the run and its seed's batch (see method_step).
  kw = dict(modes=("mtl",), optimizer="sgd", lrs=(1e-2, 3e-3),
            missing_policy=policy)
  _, ref, _ = params_of(kw)
  s, got, _ = params_of(dict(kw, method=method))
  assert s.prog.uses_method
  assert max_diff(ref.params, got.params) < 1e-6


def test_stl_programs_never_use_the_method():
  cfg = config_lib.default_config()
  cfg.method.aggregator = "pcgrad"
  progs = runs.build_programs(config_lib.validate(cfg), (8, 8, 1), 4)
  by_name = {p.name: p for p in progs}
  assert set(by_name) == {"w16", "w16_pcgrad"}
  assert not by_name["w16"].uses_method
  assert all(len(g.tasks) == 1 for g in by_name["w16"].groups)
  assert all(len(g.tasks) == 4 for g in by_name["w16_pcgrad"].groups)


@pytest.mark.parametrize("run_map", ["scan"])
def test_one_present_task_is_the_classic_step(run_map):
  # Inside a method's program, a step in which one task only is present
  # (here: the other tasks have no label in the batch) equals the classic
  # step (under "scan" it takes the classic computation, under "vmap" the
  # aggregator of one task returns its gradient; equal up to rounding.
  # STL runs are bit-identical: they never enter a method's program).
  batches = []
  for b in BATCHES:
    b = dict(b, mask=b["mask"].copy())
    b["mask"][..., 1:] = False
    batches.append(b)
  kw = dict(modes=("mtl",), run_map=run_map)
  _, ref, mref = params_of(kw, batches)
  _, got, mgot = params_of(dict(kw, method={"aggregator": "pcgrad"}), batches)
  for a, b in zip(jax.tree.leaves(ref.params), jax.tree.leaves(got.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
  np.testing.assert_allclose(mref[-1]["loss"], mgot[-1]["loss"], rtol=1e-6)


@pytest.mark.parametrize("name", ["mgda", "pcgrad"])
def test_one_step_against_jacobian_reference(name):
  # An independent reference: the per-task gradients by jax.jacrev of the
  # per-task losses (optax's sigmoid cross-entropy), task 3 absent from the
  # batch; the aggregator on the 3 present rows only; one SGD step.
  lr = 0.1
  s = step_setup(SHAPE, modes=("mtl",), seeds=(0,), lrs=(lr,),
                 optimizer="sgd", method={"aggregator": name})
  b = fake_batch(5, 1, 16)
  b["mask"][..., 3] = False
  new, _ = train_steps(s.fn, s.state, s.specs, [b], s.mesh)
  p0 = jax.tree.map(lambda x: x[0, 0], s.state.params)
  x, y, m = b["image"][0], b["labels"][0], b["mask"][0]

  def terms(p):
    logits, _ = models.apply(s.graphdef, p, {}, x)
    ce = optax.sigmoid_binary_cross_entropy(logits, y)
    return jnp.sum(jnp.where(m, ce, 0.0), axis=0) / x.shape[0]   # [T]

  jac = jax.jacrev(terms)(p0)
  flat = jax.tree_util.tree_flatten_with_path(jac)[0]
  shared = [(path, j) for path, j in flat if path[0].key == "encoder"]
  rows = jnp.concatenate([j.reshape(4, -1) for _, j in shared], axis=1)
  assert np.all(np.asarray(rows[3]) == 0)
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 0),
                           method_step._METHOD_STREAM)  # pylint: disable=protected-access
  kw = {"key": key} if name == "pcgrad" else {}
  d = np.asarray(methods.aggregate(name, rows[:3], **kw))
  got = jax.tree.map(lambda x: np.asarray(x)[0, 0], new.params)
  i = 0
  for path, j in shared:
    n = int(np.prod(j.shape[1:]))
    leaf = got
    ref = p0
    for k in path:
      leaf, ref = leaf[k.key], ref[k.key]
    np.testing.assert_allclose(leaf, np.asarray(ref) - lr * d[i:i + n].reshape(
        j.shape[1:]), atol=2e-6)
    i += n
  # Heads: each its own task's gradient; task 3's head does not move.
  head = np.asarray(jac["out_w"]).sum(axis=0)
  np.testing.assert_allclose(got["out_w"], np.asarray(p0["out_w"]) - lr * head,
                             atol=1e-6)
  np.testing.assert_array_equal(got["out_w"][3], np.asarray(p0["out_w"])[3])


def test_sharded_matches_single_device():
  assert jax.device_count() == 8
  kw = dict(modes=("mtl",), method={"aggregator": "pcgrad"})
  _, one, _ = params_of(dict(kw, num_devices=1))
  _, eight, _ = params_of(dict(kw, num_devices=8))
  assert max_diff(one.params, eight.params) < 1e-5


def test_vmapped_runs_match_unrolled_and_scanned():
  # Regression: a vmapped VJP over the task cotangents, under the runs'
  # nested vmap, gave wrong gradients (NaN for PCGrad) with per_task's
  # mask-dependent 1/T' (method_step._jacobian); SGD: Adam's first steps are
  # ~lr * sign(g), which would turn rounding-level differences into lr-sized
  # ones.
  shape = (4, 4, 3)
  batches = [fake_batch(i, 2, 16, shape) for i in range(2)]
  out = {}
  for run_map in ("vmap", "unroll"):
    s = step_setup(shape, modes=("mtl",), method={"aggregator": "pcgrad"},
                   normalize="per_task", run_map=run_map, seeds=(0, 1),
                   lrs=(1e-2, 3e-3), optimizer="sgd")
    state, metrics = train_steps(s.fn, s.state, s.specs, batches, s.mesh)
    assert np.all(np.asarray(metrics[-1]["nonfinite"]) == 0)
    out[run_map] = state.params
  assert max_diff(out["vmap"], out["unroll"]) < 1e-6


def test_per_run_hyperparameters_equal_separate_runs():
  # GradDrop's leak is a per-run value: two runs with leak = 0.1 and 0.8 in
  # one program equal two programs with one leak each.
  kw = dict(modes=("mtl",), lrs=(1e-2, 1e-2), seeds=(0,))
  s = step_setup(SHAPE, **kw, method={"aggregator": "graddrop",
                                      "aggregator_hparams": {"leak": 0.5}})
  specs = dict(s.specs)
  specs["method"] = {"aggregator": {"leak": np.array([[0.1, 0.8]],
                                                     np.float32)}}
  one = [fake_batch(i, 1, 16) for i in range(2)]
  both, _ = train_steps(s.fn, s.state, specs, one, s.mesh)
  for g, c in enumerate((0.1, 0.8)):
    _, alone, _ = params_of(
        dict(kw, method={"aggregator": "graddrop",
                         "aggregator_hparams": {"leak": c}}), one)
    for x, y in zip(jax.tree.leaves(both.params), jax.tree.leaves(alone.params)):
      np.testing.assert_allclose(np.asarray(x)[:, g], np.asarray(y)[:, g],
                                 atol=2e-5)


@pytest.mark.parametrize("arch,kwargs,rep", [
    ("share_k", {"shared_stages": 1}, True),
    ("mmoe", {"num_experts": 2}, True),
    ("cgc", {}, False),
    ("cross_stitch", {}, False),
    ("mtan", {}, False),
])
def test_architectures_split_shared_and_task_parameters(arch, kwargs, rep):
  # "sum" over the per-task gradients of the shared leaves, plus each task's
  # own leaves' gradient, is the classic gradient only if task_axis splits
  # the architecture's parameters correctly.
  kw = dict(modes=("mtl",), optimizer="sgd", seeds=(0,), arch=arch,
            arch_kwargs=kwargs)
  one = [fake_batch(i, 1, 16) for i in range(2)]
  _, ref, _ = params_of(kw, one)
  _, got, _ = params_of(dict(kw, method={"aggregator": "sum",
                                         "rep_grad": rep}), one)
  assert max_diff(ref.params, got.params) < 1e-6


def test_rep_grad_refused_without_a_shared_representation():
  cfg = config_lib.default_config()
  cfg.model.arch = "mtan"
  cfg.method.aggregator = "mgda_ub"
  with pytest.raises(config_lib.ConfigError, match="no single shared "
                     "representation"):
    runs.build_programs(config_lib.validate(cfg), (8, 8, 1), 4)


def test_method_arm_grid_is_one_program_with_per_run_values():
  cfg = config_lib.default_config()
  cfg.optimizer.learning_rates = (1e-3, 3e-3)
  cfg.method_arms = (("cagrad", {"aggregator": "cagrad",
                                 "aggregator_hparams": {"c": (0.2, 0.8)}}),
                     ("uw", {"weighting": "uw"}))
  progs = {p.name: p for p in runs.build_programs(config_lib.validate(cfg),
                                                  (8, 8, 1), 4)}
  assert set(progs) == {"w16", "w16_cagrad", "w16_uw"}
  grid = progs["w16_cagrad"]
  assert [(g.arm, g.learning_rate) for g in grid.groups] == [
      ("cagrad_c0.2", 1e-3), ("cagrad_c0.2", 3e-3), ("cagrad_c0.8", 1e-3),
      ("cagrad_c0.8", 3e-3)]
  c = grid.specs([0, 1])["method"]["aggregator"]["c"]
  np.testing.assert_allclose(c, [[0.2, 0.2, 0.8, 0.8]] * 2)
  assert progs["w16_uw"].method.weighting == "uw"
  with pytest.raises(config_lib.ConfigError, match="a grid is a non-empty "
                     "tuple of floats"):
    cfg.method_arms = (("bad", {"aggregator": "cagrad",
                                "aggregator_hparams": {"iters": (10, 20)}}),)
    config_lib.validate(cfg)


def test_stl_runs_are_bit_identical_with_and_without_a_method():
  # With a method, the STL groups train in the classic program: the same
  # step as a config without the method, bit for bit.
  from mtljax.core import parallel  # pylint: disable=g-import-not-at-top
  from mtljax.core import state as state_lib  # pylint: disable=g-import-not-at-top
  from mtljax.core import step as step_lib  # pylint: disable=g-import-not-at-top
  from tests.helpers import tiny_model_cfg  # pylint: disable=g-import-not-at-top

  def stl_params(method):
    cfg = config_lib.default_config()
    cfg.model = tiny_model_cfg()
    cfg.modes = ("mtl", "stl")
    if method:
      cfg.method.aggregator = "pcgrad"
    cfg = config_lib.validate(cfg)
    prog = runs.build_programs(cfg, SHAPE, 4)[0]
    if method:  # the first program holds the STL groups only
      assert all(len(g.tasks) == 1 for g in prog.groups)
    tx = step_lib.make_optimizer(cfg.optimizer, 10)
    graphdef, params, ms = state_lib.init_params(cfg.model, SHAPE, 4, [0, 1],
                                                 prog.num_groups)
    mesh = parallel.make_mesh(1)
    fn = step_lib.make_train_step(graphdef, tx, normalize="per_example",
                                  mesh=mesh, donate=False)
    state, _ = train_steps(fn, state_lib.init_state(params, ms, tx),
                           prog.specs([0, 1]), BATCHES, mesh)
    stl = [g for g, gr in enumerate(prog.groups) if gr.arm == "stl"]
    return jax.tree.map(lambda x: np.asarray(x)[:, stl], state.params)

  for a, b in zip(jax.tree.leaves(stl_params(False)),
                  jax.tree.leaves(stl_params(True))):
    np.testing.assert_array_equal(a, b)
