"""Checkpoints with orbax's CheckpointManager (`args=` API), and a workdir lock.

    ckpt = Checkpointer(workdir / "checkpoints", keep=2, fingerprint=fp)
    state, meta = ckpt.restore_latest(abstract_state)   # None if nothing to resume
    ckpt.save(step, state, meta)                         # atomic: tmp dir + rename

A checkpoint holds the whole stacked train state (every run's params, optimizer
state, and best-by-validation params/score/step) plus a JSON item with the
step and the config fingerprint. The data position is the step itself: the
batch at step k is a pure function of (seed, k).

Orbax writes each step to a temporary directory and renames it when complete,
so a kill in the middle of a save leaves the previous step intact. If the
newest step still fails to restore (a corrupt file), we fall back to the
previous one and say so.
"""

from __future__ import annotations

import fcntl
import logging
import os
from typing import Any

import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used (incompatible config, none restorable)."""


class Checkpointer:
  """Periodic keep-N checkpoints of the train state."""

  def __init__(self, directory: str, *, keep: int, fingerprint: str):
    self.directory = os.path.abspath(directory)
    self.fingerprint = fingerprint
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True,
        # Synchronous saves: the loop then never races a save on preemption,
        # and a finished save() is on disk. Saves are small and infrequent.
        enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "meta"))

  def save(self, step: int, state: Any, meta: dict) -> None:
    meta = dict(meta, step=int(step), fingerprint=self.fingerprint)
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=True)
    self.manager.wait_until_finished()

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore_latest(self, abstract_state: Any):
    """Restores the newest restorable checkpoint.

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
    errors = []
    for step in reversed(steps):
      try:
        meta = self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]
      except Exception as e:  # noqa: BLE001 — any unreadable step: try older
        errors.append(f"step {step}: {type(e).__name__}: {e}")
        logging.warning("checkpoint at step %d is unreadable (%s); trying an "
                        "older one", step, e)
        continue
      if meta.get("fingerprint") != self.fingerprint:
        raise CheckpointError(
            f"{self.directory} holds checkpoints of a different experiment "
            f"(config fingerprint {meta.get('fingerprint')!r}, this config "
            f"{self.fingerprint!r}: model shape, data, seeds or groups differ). "
            "Use a new --workdir, or delete the old one.")
      try:
        state = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))["state"]
      except Exception as e:  # noqa: BLE001
        errors.append(f"step {step}: {type(e).__name__}: {e}")
        logging.warning("checkpoint at step %d is corrupt (%s); falling back "
                        "to an older one", step, e)
        continue
      if errors:
        logging.warning("resumed from step %d after skipping %d unusable "
                        "checkpoint(s)", step, len(errors))
      return state, meta
    raise CheckpointError("no checkpoint in %s could be restored:\n  %s"
                          % (self.directory, "\n  ".join(errors)))

  def close(self) -> None:
    self.manager.close()


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
