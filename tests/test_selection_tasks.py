"""config.train.selection_tasks: checkpoints and rates chosen on the target.

Defining property: with selection_tasks=(0,), an MTL run's best checkpoint
is the validation step where task 0's metric is highest (read from the
per-task validation log), an STL network of another task still selects by
its own task, and the report picks each network's learning rate by the same
rule.
"""

import json
import os

import numpy as np
import pytest

from mtljax import config as config_lib
from mtljax.analysis import report
from mtljax.run import evaluate
from mtljax.run import train
from tests.test_e2e import smoke_config


def test_selection_masks():
  masks = np.array([[1, 1, 1, 1], [0, 1, 0, 0], [1, 0, 0, 0]])
  np.testing.assert_array_equal(evaluate.selection_masks(masks, ()),
                                masks > 0)
  np.testing.assert_array_equal(
      evaluate.selection_masks(masks, (0,)),
      np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]]) > 0)


def test_checkpoints_and_rates_are_chosen_on_the_selection_tasks(
    smoke_data_dir, tmp_path):
  cfg = smoke_config("train.selection_tasks=(0,)", "train.steps=9",
                     "train.eval_every=3", "train.checkpoint_every=9",
                     "optimizer.learning_rates=(3e-3, 3e-2)")
  wd = tmp_path / "w"
  res = train.train_and_evaluate(cfg, str(wd))
  names = res["dataset"]["task_names"]
  lines = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  val = {l["step"]: l["per_task"] for l in lines if l["kind"] == "validation"}
  for r in res["runs"]:
    key = f"seed{r['seed']}_lr{r['learning_rate']:g}"
    for k, t in enumerate(names):
      # MTL selects by task 0; STL's network of task t by task t itself.
      by = names[0] if r["mode"] == "mtl" else t
      curve = {s: v[r["arm"]][by][key] for s, v in val.items()}
      best = max(sorted(curve), key=lambda s: (curve[s], -s))  # first best
      assert r["best_step"][k] == best, (r["arm"], t, curve)
  summary = report.summarize([res])
  mtl = summary["conditions"][0]["arms"]["mtl"]
  # The rate with the higher mean validation score of task 0 over seeds.
  final = {lr: np.mean([r["val"]["per_task"][names[0]]["auc"]
                        for r in res["runs"] if r["arm"] == "mtl"
                        and r["learning_rate"] == lr]) for lr in (3e-3, 3e-2)}
  assert mtl["lr"]["chosen"][names[0]] == max(final, key=final.get)


def test_a_selection_task_out_of_range_is_refused_before_training(tmp_path):
  cfg = smoke_config("train.selection_tasks=(7,)")
  with pytest.raises(config_lib.ConfigError,
                     match=r"config.train.selection_tasks=\(7,\): task index "
                     "7 is out of range"):
    train.train_and_evaluate(cfg, str(tmp_path / "w"))
  with pytest.raises(config_lib.ConfigError, match="distinct task indices"):
    smoke_config("train.selection_tasks=(0, 0)")
