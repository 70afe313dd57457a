"""Shared set-up for the fault-injection tests (tests/test_faults_*.py).

Every fault is injected into one tiny run: E1's smoke variant cut to the MTL
arm and one seed (6 steps; validation and checkpoints at steps 3 and 6;
600/200/200-example splits), so that a run takes a few seconds. The fixtures
(registered for the whole session by conftest's `pytest_plugins`) build the
dataset and the uninterrupted baseline run once.

Processes that are killed or signalled run `python -m mtljax` or, for faults
that must strike at one point inside a process, a small driver (`_DRIVER`)
that patches one function and then runs the same CLI. "The same command
again" and faults that need no process boundary run `cli.main` in this
process (same devices, same compiled programs, no start-up cost).
"""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import types

import pytest

from mtljax import cli
from mtljax import data as data_lib

__all__ = [
    "E1",
    "ROOT",
    "SPLIT_SIZES",
    "TASKS",
    "TIMEOUT",
    "TINY",
    "_DRIVER",
    "_argv",
    "_assert_same_run",
    "_cmd",
    "_env",
    "_garble",
    "_error_line",
    "_metrics",
    "_patch_for_in_process",
    "_run",
    "_runs",
    "_snapshot",
    "_start",
    "_steps",
    "_wait_for",
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
E1 = os.path.join(ROOT, "experiments", "e1_mtl_vs_stl.py")
SPLIT_SIZES = (600, 200, 200)  # what E1's smoke variant builds
TINY = ("--config.modes=('mtl',)", "--config.num_seeds=1",
        "--config.model.encoder=mlp", "--config.train.progress=none")
TASKS = ("pedestrian", "car", "stop_sign", "traffic_light")
TIMEOUT = 180  # per subprocess; a hang fails the test instead of CI

# Runs the CLI with one fault injected, chosen by $MTLJAX_FAULT:
#   pause_after_save:K         after checkpoint K is saved: touch the marker
#                              file and sleep (the test kills the process)
#   kill_in_finalize:NAME[:K]  SIGKILL just before orbax renames the finished
#                              temporary directory NAME (a step, or an item
#                              such as "state" of step K) into place
#   sigterm_at:K               send ourselves SIGTERM during step K
_DRIVER = r'''
import os, signal, sys, time

kind, _, arg = os.environ.get("MTLJAX_FAULT", "").partition(":")
marker = os.environ.get("MTLJAX_FAULT_MARKER")


def touch():
  if marker:
    open(marker, "w").close()


if kind == "pause_after_save":
  from mtljax.run import checkpoint
  save = checkpoint.Checkpointer.save

  def paused_save(self, step, state, meta):
    save(self, step, state, meta)
    if step == int(arg):
      touch()
      time.sleep(300)

  checkpoint.Checkpointer.save = paused_save
elif kind == "kill_in_finalize":
  from orbax.checkpoint._src.path import atomicity
  name, _, step = arg.partition(":")
  cls = atomicity.AtomicRenameTemporaryPath
  finalize = cls.finalize

  async def killed_finalize(self):
    if self._final_path.name == name and (
        not step or self.get().parent.name.startswith(step + ".")):
      touch()
      os.kill(os.getpid(), signal.SIGKILL)
    return await finalize(self)

  cls.finalize = killed_finalize
elif kind == "sigterm_at":
  from mtljax.core import parallel
  global_batch = parallel.global_batch
  calls = []

  def signalled_global_batch(*args, **kwargs):
    if len(calls) == int(arg):
      os.kill(os.getpid(), signal.SIGTERM)
    calls.append(1)
    return global_batch(*args, **kwargs)

  parallel.global_batch = signalled_global_batch
elif kind:
  sys.exit(f"unknown fault {kind!r}")

from mtljax import cli
sys.exit(cli.main(sys.argv[1:]))
'''


# ------------------------------------------------------------------ helpers.


@pytest.fixture(scope="session")
def rel(tmp_path_factory):
  """Module set-up: the dataset (built once), the driver and a clean env."""
  root = tmp_path_factory.mktemp("reliability")
  data_dir = str(root / "tfds")
  data_lib.build("mtl_scenes", data_dir, SPLIT_SIZES, log=None)
  driver = root / "driver.py"
  driver.write_text(_DRIVER)
  env = dict(os.environ, TFDS_DATA_DIR=data_dir, JAX_PLATFORMS="cpu",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             # No persistent compilation cache: nothing written to ~/.cache.
             MTLJAX_COMPILATION_CACHE="")
  env.pop("MTLJAX_FAULT", None)
  return types.SimpleNamespace(root=root, data_dir=data_dir,
                               driver=str(driver), env=env)


def _argv(workdir, *extra):
  return ["train", "--config", f"{E1}:smoke", "--workdir", str(workdir),
          *TINY, *extra]


def _cmd(rel, argv, fault=None):
  if fault:
    return [sys.executable, rel.driver, *argv]
  return [sys.executable, "-m", "mtljax", *argv]


def _env(rel, fault=None, marker=None):
  env = dict(rel.env)
  if fault:
    env["MTLJAX_FAULT"] = fault
  if marker:
    env["MTLJAX_FAULT_MARKER"] = str(marker)
  return env


def _run(rel, argv, fault=None):
  return subprocess.run(_cmd(rel, argv, fault), env=_env(rel, fault),
                        cwd=ROOT, capture_output=True, text=True,
                        timeout=TIMEOUT, check=False)


def _start(rel, argv, fault=None, marker=None):
  return subprocess.Popen(_cmd(rel, argv, fault), env=_env(rel, fault, marker),
                          cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc, what, timeout=TIMEOUT):
  deadline = time.monotonic() + timeout
  while not predicate():
    if proc.poll() is not None:
      out, err = proc.communicate()
      pytest.fail(f"process ended (status {proc.returncode}) before {what}:\n"
                  f"{out}\n{err}")
    if time.monotonic() > deadline:
      proc.kill()
      pytest.fail(f"timed out waiting for {what}")
    time.sleep(0.002)


def _steps(workdir):
  """Complete checkpoint steps (orbax's naming: a bare integer)."""
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if (
      os.path.isdir(d)) else []


def _runs(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)["runs"]


def _metrics(workdir):
  """metrics.jsonl without wall-clock rates."""
  out = []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      record = json.loads(line)
      record.pop("steps_per_sec", None)
      out.append(record)
  return out


def _assert_same_run(workdir, baseline):
  """Bit-identical results and logs (JSON floats round-trip exactly)."""
  assert _runs(workdir) == _runs(baseline)
  assert _metrics(workdir) == _metrics(baseline)


def _snapshot(workdir):
  """sha256 of everything a failed command must not touch."""
  out = {}
  for dirpath, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(dirpath, name)
      rel_path = os.path.relpath(path, workdir)
      if rel_path == ".lock":  # holds the pid of the last process: expected
        continue
      with open(path, "rb") as f:
        out[rel_path] = hashlib.sha256(f.read()).hexdigest()
  return out


def _error_line(stderr):
  """The one `error:` line of a user error; no traceback."""
  assert "Traceback" not in stderr, stderr
  lines = [l for l in stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1, stderr
  return lines[0]


def _patch_for_in_process(mp, rel):
  mp.setattr(cli, "_setup_logging", lambda verbose=False: None)
  mp.setenv("MTLJAX_COMPILATION_CACHE", "")
  mp.setenv("TFDS_DATA_DIR", rel.data_dir)


@pytest.fixture(scope="session")
def baseline(rel):
  """An uninterrupted run: what every interrupted run must end up equal to."""
  wd = str(rel.root / "baseline")
  with pytest.MonkeyPatch.context() as mp:
    _patch_for_in_process(mp, rel)
    assert cli.main(_argv(wd)) == 0
  assert _steps(wd) == [3, 6]
  return wd


@pytest.fixture(scope="session")
def finished(rel, baseline):
  """A copy of the finished baseline for commands that must not touch it."""
  wd = str(rel.root / "finished")
  shutil.copytree(baseline, wd)
  return wd


@pytest.fixture
def in_process(rel, monkeypatch):
  """cli.main in this process: no logging set-up, no compilation cache."""
  _patch_for_in_process(monkeypatch, rel)
  return cli.main


@pytest.fixture
def rerun(in_process, caplog):
  """Runs the same command again (in this process); returns its log text."""
  def run(workdir):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mtljax"):
      assert in_process(_argv(workdir)) == 0
    return "\n".join(r.getMessage() for r in caplog.records)
  return run


def _garble(path):
  """Zeroes the second half of a file (what a torn write leaves)."""
  with open(path, "r+b") as f:
    size = os.path.getsize(path)
    f.seek(size // 2)
    f.write(b"\0" * (size - size // 2))
