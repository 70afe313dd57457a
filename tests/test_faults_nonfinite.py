"""Faults: a NaN at a chosen step.

"halt" names the step and the task and keeps the last good checkpoint;
resuming with "skip" counts the skipped update.
"""

import logging
import math
import os
import shutil

import numpy as np
import pytest

from mtljax import cli
from mtljax import data as data_lib
from tests.faults import *  # noqa: F401,F403 pylint: disable=wildcard-import

# When a restore fails, orbax abandons the reads of the other arrays; Python
# reports them ("Exception ignored in <coroutine ...>") when they are garbage
# collected.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")


# --------------------------------------------------------------- non-finite.


def _nan_in_task_at(monkeypatch, step, task):
  """From now on, batch `step` has NaN labels (observed) for one task."""
  batch = data_lib.TrainPipeline.batch

  def poisoned(self, k):
    b = batch(self, k)
    if k == step:
      b["labels"][..., task] = np.nan
      b["mask"][..., task] = True
    return b

  monkeypatch.setattr(data_lib.TrainPipeline, "batch", poisoned)


def test_nonfinite_halts_naming_step_and_task_then_resumes_with_skip(
    in_process, monkeypatch, capsys, caplog, tmp_path):
  wd = str(tmp_path / "run")
  # Step index 5 is the last step: checkpoint 6 would be written right after
  # it. The halt must come first, leaving checkpoint 3 as the last one.
  _nan_in_task_at(monkeypatch, step=5, task=1)
  assert in_process(_argv(wd)) == cli.EXIT_NONFINITE
  err = _error_line(capsys.readouterr().err)
  # Step index 5 completes step 6: the count that logs and checkpoints use.
  assert "non-finite value in step 6" in err
  assert "the last checkpoint (step 3) is intact" in err
  assert "in the loss of task(s) car " in err
  assert "pedestrian" not in err
  assert "nonfinite_policy=skip" in err
  assert _steps(wd) == [3]
  assert not os.path.exists(os.path.join(wd, "results.json"))

  # The message's advice works: same workdir, policy "skip" (allowed to
  # differ on resume), resumes from the intact checkpoint 3.
  with caplog.at_level(logging.INFO, logger="mtljax"):
    assert in_process(_argv(wd, "--config.train.nonfinite_policy=skip")) == 0
  assert any("from step 3" in r.getMessage() for r in caplog.records)
  train_records = [r for r in _metrics(wd) if r["kind"] == "train"]
  skipped = {r["step"]: r["nonfinite_skipped"] for r in train_records}
  assert skipped == {1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 1}
  assert _steps(wd) == [3, 6]
  for run in _runs(wd):
    for split in ("val", "test"):
      assert all(math.isfinite(v["loss"])
                 for v in run[split]["per_task"].values())


def test_nonfinite_skip_counts_every_skipped_update(in_process, monkeypatch,
                                                    tmp_path):
  wd = str(tmp_path / "run")
  _nan_in_task_at(monkeypatch, step=1, task=0)
  assert in_process(_argv(wd, "--config.train.nonfinite_policy=skip")) == 0
  skipped = {r["step"]: r["nonfinite_skipped"] for r in _metrics(wd)
             if r["kind"] == "train"}
  assert skipped == {1: 0, 2: 1, 3: 0, 4: 0, 5: 0, 6: 0}
  assert _steps(wd) == [3, 6]


def test_nonfinite_halt_before_any_checkpoint_says_so(in_process, monkeypatch,
                                                      capsys, tmp_path):
  wd = str(tmp_path / "run")
  _nan_in_task_at(monkeypatch, step=0, task=2)
  assert in_process(_argv(wd)) == cli.EXIT_NONFINITE
  err = _error_line(capsys.readouterr().err)
  assert "non-finite value in step 1 in the loss of task(s) stop_sign" in err
  assert "no checkpoint had been saved yet" in err
  assert "intact" not in err


def _nan_in_task_from(monkeypatch, first, task):
  batch = data_lib.TrainPipeline.batch

  def poisoned(self, k):
    b = batch(self, k)
    if k >= first:
      b["labels"][..., task] = np.nan
      b["mask"][..., task] = True
    return b

  monkeypatch.setattr(data_lib.TrainPipeline, "batch", poisoned)


def test_mostly_skipped_run_is_counted_and_warned_about(
    in_process, monkeypatch, caplog, tmp_path):
  wd = str(tmp_path / "run")
  _nan_in_task_from(monkeypatch, first=1, task=0)  # 5 of 6 steps skipped
  with caplog.at_level(logging.WARNING, logger="mtljax"):
    assert in_process(_argv(wd, "--config.train.nonfinite_policy=skip")) == 0
  (run,) = _runs(wd)
  assert run["nonfinite_skipped"] == [5, 5, 5, 5]
  (warning,) = run["warnings"]
  assert warning.startswith("5 of 6 steps (83%) were skipped as non-finite")
  assert any(warning in r.getMessage() for r in caplog.records)
  assert in_process(["report", wd]) == 0
  with open(os.path.join(wd, "report.md")) as f:
    assert f"seed 0, learning rate 0.003: {warning}" in f.read()


def test_skipped_counts_survive_a_resume(in_process, monkeypatch, tmp_path):
  """Counts live in the checkpoint: a resumed run keeps counting."""
  wd = str(tmp_path / "run")
  _nan_in_task_from(monkeypatch, first=1, task=0)
  argv = _argv(wd, "--config.train.nonfinite_policy=skip")
  assert in_process(argv) == 0
  uninterrupted = _runs(wd)
  shutil.rmtree(os.path.join(wd, "checkpoints", "6"))
  os.remove(os.path.join(wd, "results.json"))
  assert in_process(argv) == 0  # resumes from step 3 (2 skipped so far)
  assert _runs(wd) == uninterrupted


def test_run_warnings_rules():
  from mtljax import config as config_lib  # pylint: disable=g-import-not-at-top
  from mtljax.run import results  # pylint: disable=g-import-not-at-top
  tc = config_lib.default_config().train
  tc.steps, tc.warn_skipped_share = 100, 0.1
  assert results.run_warnings(10, True, tc) == []
  (w,) = results.run_warnings(11, True, tc)
  assert w.startswith("11 of 100 steps (11%)")
  (w,) = results.run_warnings(0, False, tc)
  assert "no validation score was ever finite" in w
