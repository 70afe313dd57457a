"""Faults: kill -9 at any point, SIGTERM, and two processes (jax.distributed).

  * kill -9 after the first checkpoint, while a checkpoint item is being
    written, before a finished save is renamed into place, and from outside
    at the first sign of a save; the same command again resumes and ends
    bit-identical (results.json and metrics.jsonl) to an uninterrupted run.
  * a second process on a workdir in use is refused and writes nothing.
  * SIGTERM: a checkpoint is saved, exit status 143, and the resume is exact.
  * two processes on loopback with jax.distributed (gloo) match one process.
"""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from mtljax import cli
from tests.faults import *  # noqa: F401,F403 pylint: disable=wildcard-import

# When a restore fails, orbax abandons the reads of the other arrays; Python
# reports them ("Exception ignored in <coroutine ...>") when they are garbage
# collected.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")


# ------------------------------------------------------- kill -9 and resume.


def test_kill9_after_first_checkpoint_second_process_refused_then_resume(
    rel, baseline, rerun, tmp_path):
  wd = tmp_path / "run"
  marker = tmp_path / "saved"
  first = _start(rel, _argv(wd), fault="pause_after_save:3", marker=marker)
  try:
    _wait_for(marker.exists, first, "checkpoint 3")
    before = _snapshot(wd)
    # A second process on the busy workdir: refused, nothing written.
    second = _run(rel, _argv(wd))
    assert second.returncode == cli.EXIT_USER_ERROR, second.stderr
    assert "in use by another mtljax process" in _error_line(second.stderr)
    assert _snapshot(wd) == before
    assert first.poll() is None  # the first is unaffected
  finally:
    first.kill()  # SIGKILL
    first.communicate()
  assert first.returncode == -signal.SIGKILL
  assert _steps(wd) == [3]
  assert not (wd / "results.json").exists()

  assert "from step 3" in rerun(wd)
  _assert_same_run(wd, baseline)


@pytest.mark.parametrize("fault, left, steps_left", [
    # The first save, killed while its "state" item is being committed:
    # no complete checkpoint exists; the rerun starts from step 0.
    ("kill_in_finalize:state:3", "3.orbax-checkpoint-tmp", []),
    # The second save, fully written but not yet renamed into place:
    # checkpoint 3 is the last complete one; nothing beyond it is lost.
    ("kill_in_finalize:6", "6.orbax-checkpoint-tmp", [3]),
])
def test_kill9_during_checkpoint_save_then_resume(rel, baseline, rerun,
                                                  tmp_path, fault, left,
                                                  steps_left):
  wd = tmp_path / "run"
  killed = _run(rel, _argv(wd), fault=fault)
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  assert left in os.listdir(wd / "checkpoints")
  assert _steps(wd) == steps_left

  logs = rerun(wd)
  if steps_left:
    assert f"from step {steps_left[-1]}" in logs
  else:
    assert "resuming" not in logs
  assert _steps(wd) == [3, 6]
  assert left not in os.listdir(wd / "checkpoints")
  _assert_same_run(wd, baseline)


def test_kill9_from_outside_when_a_save_begins_then_resume(rel, baseline,
                                                           rerun, tmp_path):
  """A real external kill -9 at the first sign of a checkpoint on disk.

  Where exactly it lands (inside the save, or a little after) varies from run
  to run; the resumed result must be the same wherever it does.
  """
  wd = tmp_path / "run"
  ckpts = wd / "checkpoints"
  proc = _start(rel, _argv(wd))
  try:
    _wait_for(lambda: ckpts.is_dir() and any(os.scandir(ckpts)), proc,
              "a checkpoint directory")
  finally:
    proc.kill()
    proc.communicate()
  rerun(wd)
  assert _steps(wd) == [3, 6]
  _assert_same_run(wd, baseline)


# ------------------------------------------------------------------ SIGTERM.


@pytest.mark.parametrize("during, stop, steps", [
    # The loop notices before step index 5 and saves checkpoint 5, which is
    # not a periodic checkpoint step.
    (4, 5, [3, 5]),
    # Step index 2 ends with the periodic checkpoint 3: that one is the
    # preemption checkpoint too (not saved twice).
    (2, 3, [3]),
])
def test_sigterm_saves_a_checkpoint_then_resume_is_exact(
    rel, baseline, rerun, tmp_path, during, stop, steps):
  wd = tmp_path / "run"
  stopped = _run(rel, _argv(wd), fault=f"sigterm_at:{during}")
  assert stopped.returncode == cli.EXIT_PREEMPTED, stopped.stderr
  assert "Traceback" not in stopped.stderr
  assert f"stopped: SIGTERM at step {stop}: checkpoint saved" in (
      stopped.stderr)
  assert _steps(wd) == steps
  assert not (wd / "results.json").exists()
  assert f"from step {stop}" in rerun(wd)
  _assert_same_run(wd, baseline)


# -------------------------------------------------------------- multi-host.


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_loopback_match_one_process(rel, baseline, tmp_path):
  """jax.distributed on CPU (gloo collectives), 2 processes × 4 devices.

  The baseline is 1 process × 8 devices: the same mesh size, so each device
  holds the same 2 examples of every batch. The gradient all-reduce then
  sums across processes in another order (gloo), and float32 sums are not
  associative, so losses agree to float32 rounding, not bit for bit.
  """
  wd = str(tmp_path / "run")
  port = _free_port()
  flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                   if "device_count" not in f)
  procs = []
  for i in range(2):
    env = dict(rel.env, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i),
               XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=4")
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "mtljax", *_argv(wd)], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=TIMEOUT))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, out + err
  with open(os.path.join(wd, "env.json")) as f:
    env_json = json.load(f)
  assert env_json["process_count"] == 2 and len(env_json["devices"]) == 8
  assert _steps(wd) == [3, 6]

  def leaves(obj, prefix=""):
    if isinstance(obj, dict):
      for k, v in obj.items():
        yield from leaves(v, f"{prefix}/{k}")
    elif isinstance(obj, list):
      for k, v in enumerate(obj):
        yield from leaves(v, f"{prefix}/{k}")
    else:
      yield prefix, obj

  for name, (got, want) in (("results", (_runs(wd), _runs(baseline))),
                            ("metrics", (_metrics(wd), _metrics(baseline)))):
    got, want = dict(leaves(got)), dict(leaves(want))
    assert got.keys() == want.keys(), name
    for k in want:
      if isinstance(want[k], float):
        assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), (name, k)
      else:
        assert got[k] == want[k], (name, k)
