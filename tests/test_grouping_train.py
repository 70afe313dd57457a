"""Grouping search in training: every group as runs of one program, TAG's
affinity measured in the MTL runs, checkpointed, and bad settings refused.

Defining properties: a group trained by the search is the network an arm
of that group trains (same seed, same batches: bit for bit); measuring
affinity changes no training result; an interrupted run's affinity equals
the uninterrupted one's.
"""

import json

import numpy as np
import pytest

from mtljax import config as config_lib
from mtljax.core import runs
from mtljax.run import train
from tests import helpers
from tests.test_e2e import smoke_config


def _strip(results, keys=("affinity", "affinity_measurements")):
  return [{k: v for k, v in r.items() if k not in keys}
          for r in results["runs"]]


def test_every_group_once_and_equal_to_the_same_partition_arm(
    smoke_data_dir, tmp_path):
  cfg = smoke_config("grouping.groups='all'", "num_seeds=1",
                     "partitions=(('halves',((0,1),(2,3))),)")
  res = train.train_and_evaluate(cfg, str(tmp_path / "w"))
  entries = res["runs"]
  names = res["dataset"]["task_names"]
  trained = [tuple(sorted(names.index(t) for t in g))
             for r in entries for g in r["groups"]]
  # 15 groups: MTL's, STL's 4 and the partition's 2 are not trained twice.
  assert set(trained) == set(runs.grouping_groups("all", 4))
  assert len(trained) == len(set(trained)) == 15
  searched = [r for r in entries if r.get("role") == "grouping"]
  assert {r["arm"] for r in searched} == {
      runs.grouping_arm(g) for g in runs.grouping_groups("all", 4)
      if len(g) in (2, 3) and g not in ((0, 1), (2, 3))}
  for r in entries:
    assert len(r["network_flops"]) == len(r["groups"])
    assert all(f > 0 for f in r["network_flops"])


def test_a_searched_group_is_the_partition_arms_network(smoke_data_dir,
                                                        tmp_path):
  # Group (0, 2) from the search and from a partition arm, in two runs.
  # No MTL or STL arms (modes=()): only the groups under test train.
  a = train.train_and_evaluate(smoke_config("grouping.groups='pairs'",
                                            "num_seeds=1", "modes=()"),
                               str(tmp_path / "a"))
  b = train.train_and_evaluate(smoke_config(
      "num_seeds=1", "modes=()", "partitions=(('p',((0,2),)),)"),
      str(tmp_path / "b"))
  # A report of the search's networks alone (no arms) has its section.
  from mtljax.analysis import report  # pylint: disable=g-import-not-at-top
  summary = report.write_report([a], str(tmp_path / "rep"))
  assert summary["conditions"][0]["arms"] == {}
  assert summary["conditions"][0]["grouping"]["num_trained"] == 10
  assert "### Grouping search" in open(tmp_path / "rep" / "report.md").read()
  ga = next(r for r in a["runs"] if r["arm"] == "g_0_2")
  gb = next(r for r in b["runs"] if r["arm"] == "p")
  # Same network, batches and initialisation; only the vmapped program's
  # size differs (G runs), which changes float32 rounding, not results.
  for split in ("val", "test"):
    for t, m in ga[split]["per_task"].items():
      for k, v in m.items():
        np.testing.assert_allclose(v, gb[split]["per_task"][t][k],
                                   rtol=1e-5, atol=1e-6)


def test_affinity_changes_no_result_and_resumes_exactly(smoke_data_dir,
                                                        tmp_path,
                                                        monkeypatch):
  base = dict(steps="train.steps=8", ev="train.eval_every=2",
              ck="train.checkpoint_every=4", do="model.dropout=0.3")
  plain = train.train_and_evaluate(smoke_config(*base.values()),
                                   str(tmp_path / "plain"))
  cfg = smoke_config(*base.values(), "grouping.affinity_every=3")
  full = train.train_and_evaluate(cfg, str(tmp_path / "full"))
  assert json.dumps(_strip(plain), sort_keys=True) == json.dumps(
      _strip(full), sort_keys=True)
  mtl = [r for r in full["runs"] if r["arm"] == "mtl"]
  assert all(r["affinity_measurements"] == 3 for r in mtl)  # steps 0, 3, 6
  z = np.asarray([r["affinity"] for r in mtl], np.float64)
  assert z.shape == (2, 4, 4) and np.isfinite(z).all()
  assert all("affinity" not in r for r in full["runs"] if r["arm"] != "mtl")
  # Interrupted after the checkpoint at 4 (measurements at 0 and 3 in it).
  with pytest.raises(helpers.Stop), helpers.interrupted_at(monkeypatch, 7):
    train.train_and_evaluate(cfg, str(tmp_path / "resumed"))
  resumed = train.train_and_evaluate(cfg, str(tmp_path / "resumed"))
  assert json.dumps(full["runs"], sort_keys=True) == json.dumps(
      resumed["runs"], sort_keys=True)


@pytest.mark.parametrize("overrides, match", [
    (("grouping.affinity_every=5", "modes=('stl',)"),
     r"config.grouping.affinity_every=5 measures the MTL runs' task "
     r"affinity, but config.modes=\('stl',\) has no 'mtl' arm"),
    (("grouping.groups='some'",), r"config.grouping.groups='some' is not one "
     r"of \('', 'all', 'pairs'\)"),
    (("grouping.param_budgets=(1000, -5)",),
     r"config.grouping.param_budgets must hold numbers > 0"),
    (("grouping.affinity_every=-1",),
     r"config.grouping.affinity_every must be >= 0"),
])
def test_bad_grouping_settings_are_refused(overrides, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    smoke_config(*overrides)


def test_all_groups_of_too_many_tasks_is_refused_before_training(tmp_path):
  cfg = config_lib.load_config("experiments/e6_digits.py:smoke",
                               ["grouping.groups='all'"])
  with pytest.raises(config_lib.ConfigError,
                     match=r"config.grouping.groups='all' trains every one of "
                     r"the 2\^10 - 1 = 1023 task groups of digits_multilabel, "
                     r"above config.grouping.max_tasks=5"):
    train.train_and_evaluate(cfg, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_e8_smoke_sweep_writes_the_grouping_section_and_heat_map(
    smoke_data_dir, tmp_path):
  from mtljax import cli  # pylint: disable=g-import-not-at-top
  wd = tmp_path / "e8"
  assert cli.main(["sweep", "--config", "experiments/e8_grouping.py:smoke",
                   "--workdir", str(wd), "--config.train.progress='none'"]) == 0
  summary = json.load(open(wd / "report.json"))
  (cond,) = summary["conditions"]
  gr = cond["grouping"]
  assert gr["complete"] and gr["methods"] == ["exhaustive", "pairs",
                                              "affinity"]
  assert [r["networks"] for r in gr["by_networks"]] == [1, 2, 3, 4]
  # b = 1 is the MTL network, whatever the estimate.
  for m in gr["methods"]:
    assert gr["by_networks"][0][m]["groups"] == [cond["task_names"]]
  # The search's 10 extra networks are not arms of the main tables.
  assert set(cond["arms"]) == {"mtl", "stl"}
  md = open(wd / "report.md").read()
  assert "### Grouping search" in md and "TAG lookahead affinity" in md
  heat = [p for p in summary["plots"] if p.endswith("_affinity.png")]
  assert len(heat) == 1
  assert open(wd / heat[0], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
