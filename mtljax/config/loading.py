"""Config files: `path:arg` loading, `--config.x=y` overrides, sweeps.

An experiment is a python file with `get_config(arg=None)` returning an
`ml_collections.ConfigDict` built on `default_config()`, and optionally
`get_sweep(h, arg=None)` returning the sweep written next to it::

    def get_sweep(h, arg=None):
      return h.product([h.sweep("model.width", [4, 16, 64]),
                        h.sweep("data.label_budget", [300, -1])])

    cfg = load_config("experiments/e1_mtl_vs_stl.py:quick", ["model.width=32"])
    points = load_sweep("experiments/e1_mtl_vs_stl.py:quick")  # override dicts

Config files are Python that mtljax executes: load only trusted ones.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import os
import sys
from typing import Any, Sequence

import ml_collections

from mtljax.config.checks import _coerce
from mtljax.config.checks import _unknown
from mtljax.config.schema import ConfigError
from mtljax.config.schema import _flatten
from mtljax.config.schema import _is_open
from mtljax.config.schema import default_config
from mtljax.config.schema import validate


def parse_value(text: str) -> Any:
  """`--config.x=VALUE` text → python value (literal if it parses, else str)."""
  low = text.strip().lower()
  if low in ("true", "false"):
    return low == "true"
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(cfg: ml_collections.ConfigDict,
                    overrides: dict[str, Any] | Sequence[str]):
  """Returns a copy of `cfg` with dotted-key overrides applied.

  Args:
    cfg: the config.
    overrides: {"model.width": 32} or ["model.width=32", ...].
  """
  if not isinstance(overrides, dict):
    parsed = {}
    for item in overrides:
      if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value")
      k, v = item.split("=", 1)
      parsed[k.strip().removeprefix("config.")] = parse_value(v)
    overrides = parsed
  out = cfg.copy_and_resolve_references()
  defaults = _flatten(default_config())
  for key, value in overrides.items():
    if key not in defaults and not _is_open(key):
      raise _unknown(key, defaults)
    node = out
    *parents, leaf = key.split(".")
    for p in parents:
      if p not in node:
        node[p] = ml_collections.ConfigDict()
      node = node[p]
    node[leaf] = (_coerce(key, value, defaults[key]) if key in defaults
                  else value)
  return out


def _load_module(path: str):
  if not os.path.isfile(path):
    raise ConfigError(f"config file not found: {path!r}")
  name = "mtljax_experiment_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  # In sys.modules before it runs, as `import` does: dataclasses, pickling
  # and flax look classes up there by their __module__ (a component defined
  # in an experiment file failed without it).
  sys.modules[name] = module
  try:
    spec.loader.exec_module(module)
  except BaseException:
    sys.modules.pop(name, None)
    raise
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path} has no get_config(arg) function")
  return module


def split_spec(spec: str) -> tuple[str, str | None]:
  """"experiments/x.py:quick" → ("experiments/x.py", "quick")."""
  path, _, arg = spec.partition(":")
  return path, (arg or None)


def load_config(spec: str, overrides=()) -> ml_collections.ConfigDict:
  """Loads `path[:arg]`, applies overrides, validates. See module docstring."""
  path, arg = split_spec(spec)
  module = _load_module(path)
  cfg = module.get_config(arg) if arg is not None else module.get_config()
  return validate(apply_overrides(validate(cfg), overrides))


class Hyper:
  """big_vision-style sweep builder: lists of {dotted_key: value} dicts."""

  @staticmethod
  def sweep(key: str, values) -> list[dict]:
    return [{key: v} for v in values]

  @staticmethod
  def fixed(key: str, value) -> list[dict]:
    return [{key: value}]

  @staticmethod
  def product(parts: Sequence[list[dict]]) -> list[dict]:
    out = []
    for combo in itertools.product(*parts):
      merged = {}
      for d in combo:
        merged.update(d)
      out.append(merged)
    return out

  @staticmethod
  def zip(parts: Sequence[list[dict]]) -> list[dict]:
    lengths = {len(p) for p in parts}
    if len(lengths) > 1:
      raise ConfigError(f"h.zip needs equal-length sweeps; got lengths {sorted(lengths)}")
    out = []
    for combo in zip(*parts):
      merged = {}
      for d in combo:
        merged.update(d)
      out.append(merged)
    return out

  @staticmethod
  def chain(*parts: list[dict]) -> list[dict]:
    return [d for p in parts for d in p]


def load_sweep(spec: str) -> list[dict]:
  """The sweep points (override dicts) written next to a config.

  Each point is validated by applying it to the config before anything runs.
  """
  path, arg = split_spec(spec)
  module = _load_module(path)
  if not hasattr(module, "get_sweep"):
    raise ConfigError(f"{path} has no get_sweep(h, arg) function")
  points = module.get_sweep(Hyper(), arg)
  base = load_config(spec)
  for p in points:
    validate(apply_overrides(base, p))
  return points


def point_name(point: dict) -> str:
  """A readable, filesystem-safe directory name for one sweep point."""
  if not point:
    return "default"
  parts = []
  for k, v in point.items():
    v = ",".join(map(str, v)) if isinstance(v, (tuple, list)) else v
    parts.append(f"{k.split('.')[-1]}={v}")
  return "_".join(parts).replace("/", "-").replace(" ", "")
