"""Faults: workdirs and sweeps that belong to another config, full disks.

  * a sweep rerun with other settings is refused naming the field and both
    values; --overwrite moves the old results aside and recomputes; an
    override of the swept field is refused;
  * every sweep point is checked against the dataset before any trains;
  * a workdir whose checkpoints were deleted still belongs to its config;
  * a full disk: one error line, exit 4, the last checkpoint intact, and an
    exact resume once space is freed (a real tmpfs, and a fake ENOSPC);
  * an early error leaves no workdir holding only `.lock`;
  * keep_checkpoints may change on resume, also for older checkpoints.
"""

import errno
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from mtljax.run import checkpoint as ckpt_lib
from mtljax import cli
from mtljax.run import writers
from tests.faults import _argv, _error_line, _runs, _snapshot, _steps
from tests.faults import _assert_same_run, E1, TINY

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")


def _sweep(workdir, *extra):
  return ["sweep", "--config", f"{E1}:smoke", "--workdir", str(workdir),
          *TINY, *extra]


def _widths(point_dir):
  return {r["width"] for r in _runs(point_dir)}


# ------------------------------------------------------------------ sweeps.


@pytest.mark.slow
def test_sweep_rerun_with_other_settings_is_refused_then_overwrite(
    in_process, capsys, tmp_path):
  wd = tmp_path / "s"
  assert in_process(_sweep(wd)) == 0
  points = sorted(p for p in os.listdir(wd) if p.startswith("train_"))
  assert points == ["train_examples=300", "train_examples=600"]
  before = _snapshot(wd)
  capsys.readouterr()

  assert in_process(_sweep(wd, "--config.model.width=32")) == (
      cli.EXIT_USER_ERROR)
  err = _error_line(capsys.readouterr().err)
  assert "config.model.width=32 here but 8 in config.json" in err
  assert "--overwrite" in err
  assert _snapshot(wd) == before

  # The swept field itself: the point's value would silently win.
  assert in_process(_sweep(wd, "--config.data.train_examples=400")) == (
      cli.EXIT_USER_ERROR)
  assert ("--config.data.train_examples is set by points of this sweep "
          "(values 300, 600)") in (
      _error_line(capsys.readouterr().err))
  assert in_process(_sweep(wd, "--config.data.train_examples=400",
                           "--print-commands")) == cli.EXIT_USER_ERROR
  assert _snapshot(wd) == before

  assert in_process(_sweep(wd, "--config.model.width=32", "--overwrite")) == 0
  for p in points:
    assert _widths(wd / p) == {32}
    old = wd / f"{p}.old"
    assert _widths(old) == {8}  # moved aside, not deleted
    assert _snapshot(old) == {k.split("/", 1)[1]: v for k, v in before.items()
                              if k.startswith(p + "/") and not k.endswith("/.lock")}
  # The report reads the new runs only, not the ones moved aside.
  with open(wd / "report.json") as f:
    widths = {c["condition"].get("model.width")
              for c in json.load(f)["conditions"]}
  assert widths == {32}
  # Same settings again: finished points are skipped, nothing changes.
  after = _snapshot(wd / points[0])
  assert in_process(_sweep(wd, "--config.model.width=32")) == 0
  assert _snapshot(wd / points[0]) == after


_BAD_POINT_EXPERIMENT = """
import importlib.util
spec = importlib.util.spec_from_file_location("e1", {e1!r})
e1 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(e1)


def get_config(arg=None):
  return e1.get_config("smoke")


def get_sweep(h, arg=None):
  return h.sweep({field!r}, [{good!r}, {bad!r}])
"""


@pytest.mark.parametrize("field, good, bad, expected", [
    ("stl_tasks", (0,), (9,), "config.stl_tasks=(9,): task index 9 is out of "
     "range for mtl_scenes"),
    ("data.label_budget", (50,), (10, 20, 30),
     "config.data.label_budget must have 1 or 4 values"),
    ("data.label_budget", (50,), (700,),
     "config.data.label_budget=700 for task 'pedestrian' exceeds the 600 "
     "training examples"),
    ("data.label_fraction", (0.5,), (0.5, 0.5),
     "config.data.label_fraction must have 1 or 4 values"),
    ("data.shuffle_tasks", (1,), (4,), "config.data.shuffle_tasks has task "
     "index 4"),
    ("data.train_examples", 300, 5000, "config.data.train_examples=5000 "
     "exceeds the 600 examples"),
    ("train.batch_size", 32, 1024, "config.train.batch_size=1024 exceeds the "
     "600 training examples"),
])
def test_every_sweep_point_is_checked_against_the_dataset_first(
    in_process, capsys, tmp_path, field, good, bad, expected):
  exp = tmp_path / "exp.py"
  exp.write_text(_BAD_POINT_EXPERIMENT.format(e1=E1, field=field, good=good,
                                              bad=bad))
  wd = tmp_path / "s"
  argv = ["sweep", "--config", str(exp), "--workdir", str(wd), *TINY]
  assert in_process(argv) == cli.EXIT_USER_ERROR
  err = _error_line(capsys.readouterr().err)
  assert f"sweep point {field.split('.')[-1]}=" in err
  assert expected in err
  assert not wd.exists()  # the good first point did not train


# ---------------------------------------------------------------- workdirs.


@pytest.mark.parametrize("config, expected", [
    (f"{E1}:smoke", "config.model.width=16 here but 8 in config.json"),
    ("experiments/e2_width_sweep.py:smoke", "here but"),
])
def test_workdir_without_checkpoints_still_belongs_to_its_config(
    in_process, finished, capsys, tmp_path, config, expected):
  wd = tmp_path / "a"
  shutil.copytree(finished, wd)
  shutil.rmtree(wd / "checkpoints")
  before = _snapshot(wd)
  argv = ["train", "--config", config, "--workdir", str(wd), *TINY]
  if config.startswith(E1):
    argv.append("--config.model.width=16")
  assert in_process(argv) == cli.EXIT_USER_ERROR
  assert expected in _error_line(capsys.readouterr().err)
  assert _snapshot(wd) == before

  # Only results.json left (config.json deleted too): still refused.
  os.remove(wd / "config.json")
  assert in_process(argv) == cli.EXIT_USER_ERROR
  assert "in results.json" in _error_line(capsys.readouterr().err)


def test_unreadable_config_json_is_refused(in_process, finished, capsys,
                                           tmp_path):
  wd = tmp_path / "a"
  shutil.copytree(finished, wd)
  (wd / "config.json").write_text("{not json")
  assert in_process(_argv(wd)) == cli.EXIT_USER_ERROR
  err = _error_line(capsys.readouterr().err)
  assert "config.json cannot be read" in err and "--overwrite" in err


def test_train_overwrite_moves_the_old_run_aside(in_process, finished,
                                                 tmp_path):
  wd = tmp_path / "a"
  shutil.copytree(finished, wd)
  before = _snapshot(wd)
  assert in_process(_argv(wd, "--config.model.width=4", "--overwrite")) == 0
  assert {r["width"] for r in _runs(wd)} == {4}
  assert _snapshot(tmp_path / "a.old") == before


def test_keep_checkpoints_may_change_on_resume(in_process, finished, baseline,
                                               tmp_path):
  wd = tmp_path / "a"
  shutil.copytree(finished, wd)
  assert in_process(_argv(wd, "--config.train.keep_checkpoints=5")) == 0
  _assert_same_run(wd, baseline)


def test_checkpoint_fingerprinted_with_keep_checkpoints_still_restores(
    tmp_path):
  """Checkpoints written while keep_checkpoints was in the fingerprint."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  state = {"w": jnp.arange(3.0)}
  fields = {"model.width": 8, "train.steps": 6}
  old = ckpt_lib.Checkpointer(str(tmp_path / "c"), keep=2, fingerprint="old",
                              config={**fields, "train.keep_checkpoints": 2})
  old.save(3, state, {})
  old.close()
  new = ckpt_lib.Checkpointer(str(tmp_path / "c"), keep=2, fingerprint="new",
                              config=fields)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          state)
  restored, meta = new.restore_latest(abstract)
  assert meta["step"] == 3
  np.testing.assert_array_equal(restored["w"], state["w"])
  # A computational field that differs is still refused.
  other = ckpt_lib.Checkpointer(str(tmp_path / "c"), keep=2, fingerprint="x",
                                config={**fields, "model.width": 16})
  with pytest.raises(ckpt_lib.CheckpointError,
                     match="config.model.width=16 here but 8"):
    other.restore_latest(abstract)


@pytest.mark.parametrize("existed", [False, True])
def test_an_early_error_leaves_no_lock_only_workdir(in_process, tmp_path,
                                                    capsys, existed):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  wd = tmp_path / "run"
  if existed:
    wd.mkdir()
  # A data error: found after the workdir is locked, before anything runs.
  argv = _argv(wd, f"--config.data.data_dir={blocker}")
  assert in_process(argv) == cli.EXIT_USER_ERROR
  assert "exists but is not a directory" in _error_line(
      capsys.readouterr().err)
  if existed:
    assert os.listdir(wd) == []
  else:
    assert not wd.exists()


@pytest.mark.parametrize("override, expected", [
    ("data.eval_examples=0", "config.data.eval_examples must be > 0 (or -1 "
     "for all); got 0"),
    ("data.eval_examples=-5", "config.data.eval_examples must be > 0"),
    ("data.train_examples=-2", "config.data.train_examples must be > 0"),
    ("data.train_examples=0", "config.data.train_examples must be > 0"),
    ("optimizer.learning_rates=(float('inf'),)", None),
    ("optimizer.learning_rates=(1e-3,float('nan'))", None),
    ("optimizer.weight_decay=float('nan')", None),
    ("optimizer.weight_decay=float('inf')", None),
])
def test_impossible_values_are_refused_at_validation(override, expected):
  from mtljax import config as config_lib  # pylint: disable=g-import-not-at-top
  key, value = override.split("=", 1)
  cfg = config_lib.load_config(f"{E1}:smoke")
  cfg = config_lib.apply_overrides(cfg, {key: eval(value)})  # pylint: disable=eval-used
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(cfg)
  assert (expected or f"config.{key} must be finite") in str(e.value)


# --------------------------------------------------------------- full disk.


def _mount_tmpfs(path, size):
  path.mkdir()
  res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                        str(path)], capture_output=True, text=True,
                       check=False)
  if res.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")


@pytest.mark.slow
def test_full_disk_real_tmpfs_then_exact_resume(in_process, baseline, capsys,
                                                monkeypatch, tmp_path):
  disk = tmp_path / "disk"
  _mount_tmpfs(disk, "64m")
  try:
    wd = disk / "run"
    ballast = disk / "ballast"
    save = ckpt_lib.Checkpointer.save

    def save_on_a_full_disk(self, step, state, meta):
      if step == 6:  # fill the disk to the last byte, then really save
        with open(ballast, "wb") as f:
          try:
            while True:
              f.write(b"\0" * (1 << 16))
              f.flush()
          except OSError as e:
            assert e.errno == errno.ENOSPC
          try:
            while True:
              f.write(b"\0")
              f.flush()
          except OSError:
            pass
      return save(self, step, state, meta)

    monkeypatch.setattr(ckpt_lib.Checkpointer, "save", save_on_a_full_disk)
    assert in_process(_argv(wd)) == cli.EXIT_DISK_FULL
    err = _error_line(capsys.readouterr().err)
    assert f"the disk holding workdir {wd} is full" in err
    assert "the last good checkpoint (step 3) is intact" in err
    assert _steps(wd) == [3]
    assert not (wd / "results.json").exists()

    monkeypatch.setattr(ckpt_lib.Checkpointer, "save", save)
    os.remove(ballast)
    assert in_process(_argv(wd)) == 0
    _assert_same_run(wd, baseline)
  finally:
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_full_disk_when_writing_results_fake_enospc(in_process, baseline,
                                                    capsys, monkeypatch,
                                                    tmp_path):
  wd = tmp_path / "run"
  write_json = writers.write_json

  def full(path, obj):
    if path.endswith("results.json"):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return write_json(path, obj)

  monkeypatch.setattr(writers, "write_json", full)
  assert in_process(_argv(wd)) == cli.EXIT_DISK_FULL
  err = _error_line(capsys.readouterr().err)
  assert "is full; the last good checkpoint (step 6) is intact" in err
  monkeypatch.setattr(writers, "write_json", write_json)
  assert in_process(_argv(wd)) == 0
  _assert_same_run(wd, baseline)


def test_write_json_leaves_no_partial_file(tmp_path, monkeypatch):
  path = str(tmp_path / "r.json")
  real_dump = json.dump

  def dump_then_fail(obj, f, **kw):
    real_dump(obj, f, **kw)
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(json, "dump", dump_then_fail)
  with pytest.raises(OSError):
    writers.write_json(path, {"a": 1})
  assert os.listdir(tmp_path) == []


def test_is_disk_full_sees_wrapped_errors():
  from mtljax.run import workdir  # pylint: disable=g-import-not-at-top
  try:
    try:
      raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as e:
      raise ValueError("tensorstore: write failed") from e
  except ValueError as e:
    assert workdir.is_disk_full(e)
  assert workdir.is_disk_full(RuntimeError("NOT_FOUND ... No space left on "
                                           "device [OS error: 28]"))
  assert not workdir.is_disk_full(OSError(errno.EACCES, "denied"))
