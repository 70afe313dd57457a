"""Arms are partitions of the tasks: MTL, STL and any grouping, one mechanism.

Defining property: a partition arm of one group of every task IS the MTL
arm, and one of singleton groups IS the STL arm (same seeds, batches and
initial weights, so bit-identical results); a two-group arm reports each
task from the network that learned it, with its parameters summed.
"""

import pytest

from mtljax import config as config_lib
from mtljax.run import train
from tests.faults import E1

KEYS = ("val", "test", "best_step", "param_count")


def _close(a, b, where):
  if isinstance(a, dict):
    assert set(a) == set(b), where
    for k in a:
      _close(a[k], b[k], f"{where}.{k}")
  elif isinstance(a, list):
    assert len(a) == len(b), where
    for i, (x, y) in enumerate(zip(a, b)):
      _close(x, y, f"{where}[{i}]")
  elif isinstance(a, float):
    assert a == pytest.approx(b, rel=1e-6, abs=1e-7), where
  else:
    assert a == b, where


@pytest.mark.slow
def test_partition_arms_equal_mtl_and_stl_and_split_the_tasks(
    smoke_data_dir, tmp_path):
  cfg = config_lib.load_config(f"{E1}:smoke", [
      "modes=('mtl','stl')", "num_seeds=1", "train.progress='none'",
      "partitions=(('all',((0,1,2,3),)),('single',((0,),(1,),(2,),(3,))),"
      "('pairs',((0,2),(1,3))))"])
  results = train.train_and_evaluate(cfg, str(tmp_path / "run"))
  runs = {r["arm"]: r for r in results["runs"]}
  assert set(runs) == {"mtl", "stl", "all", "single", "pairs"}
  # Equal up to float rounding: the runs sit at other positions of the
  # vmapped runs axis, whose batched kernels may round differently.
  for k in KEYS:
    _close(runs["all"][k], runs["mtl"][k], k)
    _close(runs["single"][k], runs["stl"][k], k)
  assert runs["all"]["mode"] == "mtl" and runs["single"]["mode"] == "stl"
  pairs = runs["pairs"]
  assert pairs["mode"] == "partition"
  assert pairs["groups"] == [["pedestrian", "stop_sign"],
                             ["car", "traffic_light"]]
  # Two networks of two heads each: 2 encoders + 4 heads; MTL: 1 + 4.
  head = (runs["mtl"]["param_count"] - runs["stl"]["param_count"] / 4) / 3
  encoder = runs["mtl"]["param_count"] - 4 * head
  assert pairs["param_count"] == pytest.approx(2 * encoder + 4 * head)
  assert set(pairs["test"]["per_task"]) == {"pedestrian", "stop_sign", "car",
                                            "traffic_light"}


@pytest.mark.parametrize("value, expected", [
    ("(('x',((0,1),(1,2))),)", "task 1 is in two groups"),
    ("(('mtl',((0,),)),)", "arm name 'mtl' is used twice"),
    ("(('x',()),)", "entries must be (name, ((task, ...), ...)) pairs"),
    ("(('x',((),)),)", "each group must be a non-empty tuple"),
])
def test_bad_partitions_are_refused(value, expected):
  with pytest.raises(config_lib.ConfigError, match=expected.replace(
      "(", r"\(").replace(")", r"\)")):
    config_lib.load_config(f"{E1}:smoke", [f"partitions={value}"])


def test_partition_task_out_of_range_is_refused_before_training():
  from mtljax.run import preflight  # pylint: disable=g-import-not-at-top
  cfg = config_lib.load_config(f"{E1}:smoke", ["partitions=(('x',((0,7),)),)"])
  with pytest.raises(config_lib.ConfigError,
                     match="config.partitions\\['x'\\]: task index 7 is out "
                     "of range for mtl_scenes"):
    preflight.check(cfg)
