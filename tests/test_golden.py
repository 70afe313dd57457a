"""A golden result for "nothing changed": E1's smoke run, number for number.

The golden file holds the runs of `mtljax train --config
experiments/e1_mtl_vs_stl.py:smoke` (2 seeds × MTL, STL and parameter-matched
STL, 6 steps, on the session's 8 forced CPU devices) as written before a
refactor. Refactors must reproduce it: on the CPU model that wrote it, to
float32 rounding (1e-6); on another CPU kind, whose XLA kernels may round
differently, to 1e-3. Regenerate it only for an intended change of results:

    MTLJAX_WRITE_GOLDEN=1 python -m pytest tests/test_golden.py
"""

import json
import os

import numpy as np
import pytest

from mtljax import cli
from mtljax.run import host
from tests.faults import E1

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "e1_smoke.json")
KEYS = ("arm", "seed", "learning_rate", "width", "param_count", "best_step",
        "val", "test")


# Keys added to results.json after the golden file was written (a schema
# addition, not a change of any number): {key: the golden key it equals}.
ADDED = {"primary": "auc"}


def _close(a, b, tol, where=""):
  if isinstance(a, dict):
    extra = set(a) - set(b)
    assert set(b) <= set(a) and extra <= set(ADDED), where
    for k in extra:  # e.g. mean["primary"] is the mean AUC of binary tasks
      _close(a[k], b[ADDED[k]], tol, f"{where}.{k}")
    for k in b:
      _close(a[k], b[k], tol, f"{where}.{k}")
  elif isinstance(a, list):
    assert len(a) == len(b), where
    for i, (x, y) in enumerate(zip(a, b)):
      _close(x, y, tol, f"{where}[{i}]")
  elif isinstance(a, float) or isinstance(b, float):
    if a is None or b is None:
      assert a is b, where
    else:
      np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=where)
  else:
    assert a == b, where


@pytest.mark.slow
def test_e1_smoke_matches_the_golden_result(smoke_data_dir, tmp_path,
                                            monkeypatch):
  monkeypatch.setattr(cli, "_setup_logging", lambda verbose=False: None)
  monkeypatch.setenv("MTLJAX_COMPILATION_CACHE", "")
  wd = tmp_path / "e1"
  assert cli.main(["train", "--config", f"{E1}:smoke", "--workdir", str(wd),
                   "--config.train.progress=none"]) == 0
  with open(wd / "results.json") as f:
    runs = [{k: r[k] for k in KEYS} for r in json.load(f)["runs"]]
  if os.environ.get("MTLJAX_WRITE_GOLDEN") == "1":
    with open(GOLDEN, "w") as f:
      json.dump({"cpu": host.cpu_model(), "runs": runs}, f, indent=1)
      f.write("\n")
  with open(GOLDEN) as f:
    golden = json.load(f)
  tol = 1e-6 if golden["cpu"] == host.cpu_model() else 1e-3
  assert len(runs) == len(golden["runs"])
  for i, (got, want) in enumerate(zip(runs, golden["runs"])):
    _close(got, want, tol, f"runs[{i}]")
