"""A run's workdir: writability, ownership, moving old results aside, disk full.

    check_writable(workdir)
    check_owner(workdir, config)          # ConfigError if another config made it
    aside = move_aside(workdir)           # `--overwrite`: keep, never delete
    if is_disk_full(exc): raise DiskFullError(...)

A workdir belongs to the config that made it. Its checkpoints record that
config, and so do `config.json` and `results.json`, so a workdir made by
another config is refused whatever is left in it (a user who deleted the
checkpoints to save space must not have the results silently replaced).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket

from mtljax import errors
from mtljax import config as config_lib

ConfigError = config_lib.ConfigError


DiskFullError = errors.DiskFullError


def computational_fields(config) -> dict:
  """{dotted key: value} of every field that affects the computation."""
  flat = config_lib._flatten(config)  # pylint: disable=protected-access
  return {k: v for k, v in flat.items()
          if k not in config_lib.COSMETIC_FIELDS}


def fingerprint(config) -> str:
  """Hash of every field that affects the computation (resume compatibility)."""
  return hashlib.sha256(json.dumps(computational_fields(config), sort_keys=True,
                                   default=str).encode()).hexdigest()[:16]


def check_writable(workdir: str) -> None:
  """Creates `workdir` if needed and proves that a file can be written there.

  Raises:
    ConfigError: naming the directory and the reason.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    # Per process: the hosts of a multi-host job (and a second job that is
    # about to be refused by the lock) probe the same directory at once.
    probe = os.path.join(workdir, f".write_test.{socket.gethostname()}."
                         f"{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    if e.errno == errno.ENOSPC:
      raise DiskFullError(e.errno, f"the disk holding workdir {workdir} is "
                          "full; free some space and run the command again"
                          ) from None
    raise ConfigError(
        f"workdir '{workdir}' is not writable: {e.strerror or e}") from None


def _recorded_configs(workdir: str):
  """(file name, flat config) for config.json and results.json's config."""
  for name in ("config.json", "results.json"):
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
      continue
    try:
      with open(path) as f:
        obj = json.load(f)
      if name == "results.json":
        obj = obj["config"]
      if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ConfigError(
          f"{path} cannot be read ({type(e).__name__}: {e}), so it is unknown "
          "which config made this workdir; use another --workdir, or "
          "--overwrite to move the old contents aside") from None
    yield name, config_lib.flatten_dict(obj)


def check_owner(workdir: str, config, *, hint: str = "") -> None:
  """Refuses a workdir whose recorded config differs from `config`.

  Args:
    workdir: the directory (may not exist).
    config: the validated config about to run there.
    hint: appended to the message (what the user can do instead).

  Raises:
    ConfigError: naming the fields and both values.
  """
  if not os.path.isdir(workdir):
    return
  ours = computational_fields(config)
  for name, theirs in _recorded_configs(workdir):
    diff = config_lib.differences(ours, theirs)
    if diff:
      raise ConfigError(
          f"{workdir} was made by another config ("
          f"{config_lib.describe_differences(diff, name)}). "
          + (hint or "Use another --workdir, or --overwrite to move the old "
             "results aside and recompute."))


def move_aside(path: str, keep: tuple[str, ...] = ()) -> str | None:
  """Moves the contents of `path` into a new sibling `<path>.old[.n]`.

  Nothing is deleted: an `--overwrite` must be reversible.

  Args:
    path: a directory.
    keep: entry names left in place (the lock file this process holds).

  Returns:
    The new directory, or None if there was nothing to move.
  """
  if not os.path.isdir(path):
    return None
  entries = [e for e in os.listdir(path) if e not in keep]
  if not entries:
    return None
  base = os.path.normpath(path) + ".old"
  dst, n = base, 1
  while os.path.exists(dst):
    dst, n = f"{base}.{n}", n + 1
  os.makedirs(dst)
  for e in entries:
    os.rename(os.path.join(path, e), os.path.join(dst, e))
  return dst


def is_disk_full(exc: BaseException) -> bool:
  """Whether `exc`, or an exception that caused it, is ENOSPC.

  Orbax and tensorstore wrap the OS error (sometimes only as text), so the
  chain of causes and the messages are searched.
  """
  seen = set()
  stack = [exc]
  while stack:
    e = stack.pop()
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(e) or "ENOSPC" in str(e):
      return True
    stack += [e.__cause__, e.__context__]
    stack += list(getattr(e, "exceptions", ()))  # ExceptionGroup
  return False


def saved_steps(workdir: str) -> list[int]:
  """Finished checkpoint steps in workdir/checkpoints (orbax: bare integers)."""
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def remove_if_only_lock(workdir: str, created: bool) -> None:
  """Undoes an early failure: a workdir holding nothing but our `.lock`.

  Args:
    workdir: the directory.
    created: this process created it (then it is removed too).
  """
  try:
    if os.listdir(workdir) == [".lock"]:
      os.remove(os.path.join(workdir, ".lock"))
    if created and not os.listdir(workdir):
      os.rmdir(workdir)
  except OSError:
    pass  # tidying up is best effort; the error that got us here matters
