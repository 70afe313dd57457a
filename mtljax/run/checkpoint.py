"""Checkpoints with orbax's CheckpointManager (`args=` API), and a workdir lock.

    ckpt = Checkpointer(workdir / "checkpoints", keep=2, fingerprint=fp)
    state, meta = ckpt.restore_latest(abstract_state)   # None if nothing to resume
    ckpt.save(step, state, meta)                         # atomic: tmp dir + rename

A checkpoint holds the whole stacked train state (every run's params, optimizer
state, and best-by-validation params/score/step) plus a JSON item with the
step and the config fingerprint. The data position is the step itself: the
batch at step k is a pure function of (seed, k).

Orbax writes each step to a temporary directory and renames it when complete,
so a kill in the middle of a save leaves the previous step intact (the
leftover temporary directory is replaced by the next save of that step). If
the newest step still fails to restore (a corrupt file), we fall back to the
previous one, say so, and move the unusable step aside to `<step>.corrupt`
(kept for inspection; orbax ignores the name) so that the resumed run can save
that step again.
"""

from __future__ import annotations

import fcntl
import logging
import os
from typing import Any

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from mtljax import errors
from mtljax import config as config_lib


CheckpointError = errors.CheckpointError


class Checkpointer:
  """Periodic keep-N checkpoints of the train state."""

  def __init__(self, directory: str, *, keep: int, fingerprint: str,
               config: dict | None = None):
    """Args:
      directory: where the step directories go.
      keep: how many of the newest steps to keep.
      fingerprint: hash of the config fields that affect the computation; a
        checkpoint with another fingerprint is refused on restore.
      config: those fields ({dotted key: value}), stored with each step so
        that a refusal can name the fields that differ.
    """
    self.directory = os.path.abspath(directory)
    self.fingerprint = fingerprint
    self.config = config
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True,
        # Synchronous saves: the loop then never races a save on preemption,
        # and a finished save() is on disk. Saves are small and infrequent.
        enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "meta"))

  def save(self, step: int, state: Any, meta: dict) -> None:
    meta = dict(meta, step=int(step), fingerprint=self.fingerprint)
    if self.config is not None:
      meta["config"] = self.config
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=True)
    self.manager.wait_until_finished()

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore_latest(self, abstract_state: Any):
    """Restores the newest restorable checkpoint.

    Newer steps that cannot be read are moved aside to `<step>.corrupt` (only
    once an older step has restored, so a failure that leaves nothing to
    resume from changes nothing on disk).

    Args:
      abstract_state: a pytree of jax.ShapeDtypeStruct (with shardings) that
        the state must match.

    Returns:
      (state, meta), or (None, None) if the directory has no checkpoint.

    Raises:
      CheckpointError: the checkpoints were written by an incompatible config,
        or none of them can be restored.
    """
    steps = self.steps()
    if not steps:
      return None, None
    failures, bad = [], []
    for step in reversed(steps):
      try:
        meta = self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]
        if not isinstance(meta, dict):
          raise ValueError(f"meta item is {type(meta).__name__}, not a dict")
      except Exception as e:  # noqa: BLE001 — any unreadable step: try older
        failures.append(f"step {step}: {_one_line(e)}")
        bad.append(step)
        continue
      if meta.get("fingerprint") != self.fingerprint and not (
          self._same_fields(meta)):
        raise CheckpointError(
            f"{self.directory} holds checkpoints of a different experiment "
            f"({self._difference(meta)}). Use a new --workdir, or delete the "
            "old one.")
      try:
        state = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))["state"]
      except Exception as e:  # noqa: BLE001
        failures.append(f"step {step}: {_one_line(e)}")
        bad.append(step)
        continue
      if bad:
        moved = self._set_aside(bad)
        logging.warning(
            "checkpoint(s) at step(s) %s could not be restored (%s); resuming "
            "from the previous good checkpoint, step %d. The unusable ones "
            "were moved to %s.", ", ".join(map(str, bad)), "; ".join(failures),
            step, ", ".join(moved))
      return state, meta
    raise CheckpointError(
        "no checkpoint in %s could be restored (nothing was changed; move the "
        "directory away to start again; a checkpoint of the same config that "
        "fails to restore was usually written by another mtljax version, "
        "whose train state differs):\n  %s"
        % (self.directory, "\n  ".join(failures)))

  def _same_fields(self, meta: dict) -> bool:
    # The fingerprint hashes every computational field of its day. A field
    # later reclassified as cosmetic (keep_checkpoints) changes the hash but
    # not the computation: compare the recorded fields themselves.
    theirs = meta.get("config")
    return (isinstance(theirs, dict) and self.config is not None
            and not config_lib.differences(self.config, theirs))

  def _difference(self, meta: dict) -> str:
    """Names the config fields in which `meta`'s run differs from this one."""
    theirs = meta.get("config")
    if not isinstance(theirs, dict) or self.config is None:
      return (f"config fingerprint {meta.get('fingerprint')!r}, this config "
              f"{self.fingerprint!r}: model shape, data, seeds or groups "
              "differ")
    diff = config_lib.differences(self.config, theirs)
    if not diff:
      return f"config fingerprint {meta.get('fingerprint')!r}"
    return config_lib.describe_differences(diff, "the checkpoint")

  def _set_aside(self, steps: list[int]) -> list[str]:
    """Renames unusable step directories to `<step>.corrupt[.n]`."""
    moved = []
    for step in steps:
      src = os.path.join(self.directory, str(step))
      dst, n = f"{src}.corrupt", 1
      while os.path.exists(dst):
        dst, n = f"{src}.corrupt.{n}", n + 1
      moved.append(dst)
      if jax.process_index() == 0 and os.path.isdir(src):
        os.rename(src, dst)
    if jax.process_count() > 1:  # the others wait for process 0's renames
      multihost_utils.sync_global_devices("mtljax_checkpoint_set_aside")
    self.manager.reload()
    return moved

  def close(self) -> None:
    self.manager.close()


def _one_line(e: BaseException) -> str:
  """`Type: first line of the message`, for warnings and error lists."""
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


class WorkdirLock:
  """An exclusive, advisory lock on a workdir (fcntl; released on exit/kill).

  A second process on the same workdir would interleave checkpoints and
  results; it is refused with a clear message instead.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, ".lock")
    self._fd = None

  def __enter__(self):
    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(self._fd)
      self._fd = None
      raise CheckpointError(
          f"workdir {os.path.dirname(self.path)} is in use by another mtljax "
          "process; wait for it to finish or use another --workdir") from None
    os.ftruncate(self._fd, 0)
    os.write(self._fd, str(os.getpid()).encode())
    return self

  def __exit__(self, *exc):
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None
    return False
