"""Study v2's experiment design, as configs (experiments/e*.py): every task
in turn is the target, the target's exposure is fixed, selection is on the
target, and the arms and grids the issue asks for are there."""

import os

import numpy as np
import pytest

from mtljax import config as config_lib
from mtljax.study import presets

EXP = os.path.join(os.path.dirname(__file__), "..", "experiments")


def points(name, variant):
  spec = f"{os.path.join(EXP, name)}:{variant}"
  base = config_lib.load_config(spec)
  return [config_lib.apply_overrides(base, p)
          for p in config_lib.load_sweep(spec)]


@pytest.mark.parametrize("variant", ["full", "gpu"])
def test_e3_every_task_is_the_target_at_fixed_exposure(variant):
  cfgs = points("e3_data_asymmetry.py", variant)
  v = presets.parse_arg(variant)
  targets = set()
  for c in cfgs:
    (t,) = c.stl_tasks
    targets.add(t)
    assert tuple(c.train.selection_tasks) == (t,)
    # The same number of draws per example whatever the target's labels:
    # steps x batch / N = TARGET_PASSES.
    assert c.data.train_examples * presets.TARGET_PASSES == (
        c.train.steps * c.train.batch_size)
    budget = c.data.label_budget
    aux = {b for k, b in enumerate(budget) if k != t}
    assert len(aux) == 1 and aux.pop() in (budget[t], -1)
    assert 0 < budget[t] <= c.data.train_examples
  assert targets == {0, 1, 2, 3}
  sizes = {c.data.label_budget[c.stl_tasks[0]] for c in cfgs}
  assert sizes == set(presets.pick(v, {"full": [100],
                                       "gpu": [100, 300, 1000]}))
  # The three losses: summed, per-task and target-weighted.
  losses = {(c.loss.normalize, tuple(n for n, _ in c.method_arms))
            for c in cfgs}
  assert losses == {("per_example", ()), ("per_task", ("target_weighted",))}
  for c in cfgs:
    for _, f in c.method_arms:
      assert f["weighting_hparams"]["task"] == c.stl_tasks[0]


@pytest.mark.parametrize("variant", ["full", "gpu"])
def test_e5_controls_match_e3s_targets(variant):
  e3 = {(c.stl_tasks[0], c.data.label_budget[c.stl_tasks[0]])
        for c in points("e3_data_asymmetry.py", variant)}
  e5 = points("e5_unrelated_tasks.py", variant)
  kinds = set()
  for c in e5:
    t = c.stl_tasks[0]
    assert (t, c.data.label_budget[t]) in e3
    kinds.add("shuffled" if c.data.shuffle_tasks else c.data.name)
    if c.data.shuffle_tasks:
      assert t not in c.data.shuffle_tasks and len(c.data.shuffle_tasks) == 3
  assert kinds == ({"shuffled", "mtl_scenes/unrelated"} if variant == "gpu"
                   else {"mtl_scenes/unrelated"})


def test_e2_grids_and_widths():
  cfgs = points("e2_width_sweep.py", "full")
  assert all(len(c.optimizer.learning_rates) >= 3 for c in cfgs)
  widths = sorted({c.model.width for c in cfgs if c.name.startswith(
      "e2_width_sweep")})
  assert widths[-1] >= 32
  assert {c.train.steps for c in cfgs if c.name == "e2_steps"} == {200, 400}
  # The branching axis: MTL with the first k of 3 stages shared, beside STL.
  share = [c for c in cfgs if c.name == "e2_share_k"]
  assert sorted(c.model.arch_kwargs.shared_stages for c in share) == [1, 2]
  assert {(c.model.arch, c.model.width, c.model.depth) for c in share} == {
      ("share_k", 8, 3)}
  assert all(set(c.modes) == {"mtl", "stl"} for c in share)
  gpu = points("e2_width_sweep.py", "gpu")
  assert max(c.model.width for c in gpu) == 128
  assert all(len(c.optimizer.learning_rates) >= 4 for c in gpu)
  assert all(c.num_seeds == 10 for c in gpu)


def test_e1_has_every_kind_and_e9_every_target():
  (c, *_) = points("e1_mtl_vs_stl.py", "full")
  assert set(c.modes) == {"mtl", "stl", "stl_matched", "mtl_matched"}
  e9 = points("e9_positive_control.py", "full")
  assert {(c.data.name, c.stl_tasks[0]) for c in e9} == {
      ("mtl_scenes/attributes", t) for t in range(4)} | {
          ("multi_mnist", 0), ("multi_mnist", 1)} | {
              ("digits_multilabel", t) for t in range(10)}
  # The follow-up: the attributes targets only, each regression loss over
  # its target's variance (num_cars on {0..3}, stop_x on [0.12, 0.88]).
  scaled = points("e9_positive_control.py", "full,scaled")
  assert {(c.data.name, c.stl_tasks[0]) for c in scaled} == {
      ("mtl_scenes/attributes", t) for t in range(4)}
  for c in scaled:
    np.testing.assert_allclose(c.loss.task_weights,
                               (1, 1 / np.var(np.arange(4)), 1,
                                1 / np.var(np.linspace(0.12, 0.88, 100001))),
                               rtol=1e-3)
    assert c.name.endswith("_scaled")
  with pytest.raises(config_lib.ConfigError, match="unknown option"):
    points("e9_positive_control.py", "full,scaledd")


def test_quick_runs_the_experiments_its_scale_can_decide():
  from mtljax.study import reproduce  # pylint: disable=g-import-not-at-top
  names = lambda mode, only=(): [e[0] for e in
                                 reproduce.selected_experiments(mode, only)]
  assert names("quick") == ["e1", "e2", "e4"]
  assert names("full") == names("smoke") == names("gpu") == [
      "e1", "e2", "e3", "e4", "e5", "e6", "e9"]
  assert names("quick", ("e3", "e7")) == ["e3", "e7"]
  with pytest.raises(config_lib.ConfigError, match="unknown experiment"):
    names("quick", ("e10",))
  # The claims of experiments not run read "not tested", with the reason.
  vs = reproduce.verdicts({})
  assert {v["verdict"] for v in vs} == {"not tested"}
  assert all("--full" in v["rule"] for v in vs)
