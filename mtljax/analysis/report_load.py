"""Reading results.json files for a report, with their schema checked.

Split from report.py: `load_results` finds the files (workdirs, sweep trees,
or the files themselves) and checks each one's keys and types up front, so
that a corrupt or hand-edited file is reported by name (as a ReportError)
instead of failing deep inside the statistics.

`dataset.tasks` (one `Task.to_json()` dict per task, in order) gives each
task's type; results.json files written before task types lack it, and then
every task is binary. `task_objects(r)` reads it either way.
"""

from __future__ import annotations

import json
import numbers
import os
import re

from mtljax import errors
from mtljax import registry
from mtljax.tasks import types as task_types

SCHEMA_VERSION = 1
_RUN_KEYS = ("arm", "mode", "seed", "learning_rate", "val", "test")
_SKIP_DIRS = ("checkpoints", "tensorboard")  # big, and never hold results
# Old results that `--overwrite` moved aside (`<point>.old`, `.old.1`, ...):
# kept, never reported.
_MOVED_ASIDE = re.compile(r"\.old(\.\d+)?$")


ReportError = errors.ReportError


def known_metrics() -> tuple[str, ...]:
  """Every metric of a registered task type, in registration order."""
  return tuple(dict.fromkeys(
      m for n in registry.TASK_TYPES.names()
      for m in registry.TASK_TYPES.get(n).metrics))


def task_objects(r: dict) -> list[task_types.Task]:
  """The Tasks of a results dict: `dataset.tasks`, or all binary (old files).

  Raises:
    ReportError: naming the source, if a task entry is not a valid Task.
  """
  ds = r.get("dataset") or {}
  if ds.get("tasks") is None:
    names = ds.get("task_names") or list(r["runs"][0]["test"]["per_task"])
    return [task_types.Binary(n) for n in names]
  problem = _bad_tasks(ds["tasks"])
  if problem:
    raise ReportError(f"{r.get('source', '<in memory>')}: malformed "
                      f"results.json, {problem}")
  return [task_types.Task.from_json(d) for d in ds["tasks"]]


def _bad_tasks(tasks) -> str | None:
  """What is wrong with a `dataset.tasks` value, or None."""
  if not isinstance(tasks, list) or not tasks:
    return "dataset.tasks is not a non-empty list"
  for i, d in enumerate(tasks):
    if not isinstance(d, dict):
      return f"dataset.tasks[{i}] is not an object"
    try:
      task_types.Task.from_json(d)
    except (TypeError, ValueError) as e:  # ConfigError is a ValueError
      return f"dataset.tasks[{i}] is not a valid task ({e})"
  return None


def load_results(paths) -> list[dict]:
  """Reads results.json files: workdirs, sweep trees, or the files themselves.

  Args:
    paths: workdirs holding results.json, or directories searched recursively
      (a sweep directory), or results.json paths.

  Returns:
    One dict per file, in path order, with "source" (its path) added. A file
    reached twice (a sweep and one of its points) is read once.

  Raises:
    ReportError: naming the path, if a path does not exist or has no
      results.json, or a file is unreadable, malformed or of another
      schema_version.
  """
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  out, seen = [], set()
  for path in map(os.fspath, paths):
    if os.path.isfile(path):
      files = [path]
    elif os.path.isdir(path):
      files = []
      for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs
                         if d not in _SKIP_DIRS and not d.startswith(".")
                         and not _MOVED_ASIDE.search(d))
        if "results.json" in names:
          files.append(os.path.join(root, "results.json"))
    else:
      raise ReportError(f"{path}: no such file or directory")
    if not files:
      raise ReportError(f"{path}: no results.json found (has training "
                        "finished? results.json is written at the end)")
    for f in files:
      if os.path.realpath(f) not in seen:
        seen.add(os.path.realpath(f))
        out.append(_read(f))
  return out


def _read(path: str) -> dict:
  try:
    with open(path) as f:
      r = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ReportError(f"{path}: not a readable results.json ({e})") from e
  if not isinstance(r, dict):
    raise ReportError(f"{path}: expected a JSON object, got {type(r).__name__}")
  if r.get("schema_version") != SCHEMA_VERSION:
    raise ReportError(f"{path}: schema_version {r.get('schema_version')!r}; "
                      f"this mtljax reads version {SCHEMA_VERSION}")
  problem = _malformed(r)
  if problem:
    raise ReportError(f"{path}: malformed results.json, {problem}")
  return {**r, "source": path}


def _is_num(v, allow_none: bool = False) -> bool:
  if v is None:
    return allow_none
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _malformed(r: dict) -> str | None:
  """What makes r unusable (a missing key or a wrong type), or None."""
  for key in ("experiment", "runs"):
    if key not in r:
      return f"no {key!r}"
  if not isinstance(r["experiment"], str):
    return "experiment is not a string"
  for key in ("condition", "dataset"):
    if not isinstance(r.get(key) or {}, dict):
      return f"{key} is not an object"
  tasks = (r.get("dataset") or {}).get("task_names")
  if tasks is not None and not (isinstance(tasks, list)
                                and all(isinstance(t, str) for t in tasks)):
    return "dataset.task_names is not a list of strings"
  if (r.get("dataset") or {}).get("tasks") is not None:
    problem = _bad_tasks(r["dataset"]["tasks"])
    if problem:
      return problem
    names = [d["name"] for d in r["dataset"]["tasks"]]
    if tasks is not None and names != tasks:
      return (f"dataset.tasks names {names} differ from dataset.task_names "
              f"{tasks}")
  sel = r.get("selection_metric")
  allowed = (task_types.PRIMARY, *known_metrics())
  if sel is not None and sel not in allowed:
    return f"selection_metric {sel!r} is not one of {allowed}"
  if not isinstance(r["runs"], list) or not r["runs"]:
    return "no runs"
  for i, run in enumerate(r["runs"]):
    if not isinstance(run, dict):
      return f"run {i} is not an object"
    missing = [k for k in _RUN_KEYS if k not in run]
    missing += [f"{s}.per_task" for s in ("val", "test")
                if not isinstance(run.get(s), dict) or "per_task" not in run[s]]
    if missing:
      return f"run {i} lacks {', '.join(missing)}"
    if not (isinstance(run["arm"], str) and isinstance(run["mode"], str)):
      return f"run {i}: arm and mode must be strings"
    if not (isinstance(run["seed"], int) and not isinstance(run["seed"], bool)
            and _is_num(run["learning_rate"])
            and _is_num(run.get("param_count"), allow_none=True)):
      return f"run {i}: seed, learning_rate or param_count is not a number"
    for s in ("val", "test"):
      per_task = run[s]["per_task"]
      if not (isinstance(per_task, dict) and all(
          isinstance(m, dict) and all(_is_num(v, True) for v in m.values())
          for m in per_task.values())):
        return (f"run {i}: {s}.per_task is not "
                "{task: {metric: number or null}}")
  return None
