"""The checks that `schema.validate` calls, and the config.data.tfds mapping.

Split from schema.py, whose `validate` runs them on a coerced copy of the
config after its per-field range checks:

  * `_unknown`: the ConfigError of an unknown field, with a close match.
  * `_coerce`: a value coerced to the type of its field's default (also used
    by `loading.apply_overrides`).
  * `_check_partitions`, `_check_selection_metric`, `_check_tfds` (with
    `_pairs`): cross-field checks of config.partitions (against
    config.modes), config.train.selection_metric (against the registered
    task types' metrics) and config.data.tfds (against config.data.name).

`tfds_options` turns config.data.tfds into the mapping `data.open_split`
takes; it is exported as `mtljax.config.tfds_options`.
"""

from __future__ import annotations

import itertools

import difflib
from typing import Any

from mtljax import errors


ConfigError = errors.ConfigError


def _unknown(key: str, known) -> ConfigError:
  hint = difflib.get_close_matches(key, list(known), n=1)
  extra = f" (did you mean {hint[0]!r}?)" if hint else ""
  return ConfigError(f"unknown config field {key!r}{extra}")


def _coerce(key: str, value: Any, default: Any) -> Any:
  """Coerces `value` to the type of the field's default, or raises."""
  if isinstance(default, bool):
    if isinstance(value, bool):
      return value
    raise ConfigError(f"config.{key} must be true/false; got {value!r}")
  if isinstance(default, int):
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    if isinstance(value, float) and value.is_integer():
      return int(value)
    raise ConfigError(f"config.{key} must be an integer; got {value!r}")
  if isinstance(default, float):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    raise ConfigError(f"config.{key} must be a number; got {value!r}")
  if isinstance(default, str):
    if isinstance(value, str):
      return value
    raise ConfigError(f"config.{key} must be a string; got {value!r}")
  if isinstance(default, tuple):
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
      value = (value,)
    if not isinstance(value, (tuple, list)):
      raise ConfigError(f"config.{key} must be a sequence; got {value!r}")
    if default:
      value = tuple(_coerce(key, v, default[0]) for v in value)
    return tuple(value)
  return value


METHOD_FIELDS = ("weighting", "aggregator", "rep_grad", "weighting_hparams",
                 "aggregator_hparams")


def method_config(cfg, overrides: dict | None = None):
  """config.method with a method arm's overrides applied (a copy)."""
  m = cfg.method.copy_and_resolve_references()
  for key, value in (overrides or {}).items():
    m[key] = value
  return m


def _check_method_arms(cfg) -> None:
  """config.method_arms: (name, {method field: value}) pairs."""
  names = set(cfg.modes) | {p[0] for p in cfg.partitions}
  for entry in cfg.method_arms:
    if not (isinstance(entry, (tuple, list)) and len(entry) == 2
            and isinstance(entry[0], str) and entry[0]
            and isinstance(entry[1], dict)):
      raise ConfigError(
          "config.method_arms entries must be (name, {method field: value}) "
          f"pairs, e.g. ('pcgrad', {{'aggregator': 'pcgrad'}}); got {entry!r}")
    name, fields = entry
    if name in names:
      raise ConfigError(f"config.method_arms: arm name {name!r} is used twice "
                        "(or is one of config.modes or config.partitions)")
    names.add(name)
    for key in fields:
      if key not in METHOD_FIELDS:
        raise ConfigError(f"config.method_arms[{name!r}]: {key!r} is not a "
                          f"method field; fields: {', '.join(METHOD_FIELDS)}")
    for field in ("weighting_hparams", "aggregator_hparams"):
      for key, value in dict(fields.get(field, {})).items():
        if isinstance(value, (tuple, list)) and not (
            value and all(isinstance(v, float) for v in value)):
          raise ConfigError(
              f"config.method_arms[{name!r}]: {field}.{key}={value!r}: a grid "
              "is a non-empty tuple of floats (per-run values; an int, bool "
              "or string changes the compiled program and cannot be a grid)")
    try:
      _check_method(cfg, method_config(cfg, first_of_grids(fields)))
    except ConfigError as e:
      raise ConfigError(f"config.method_arms[{name!r}]: {e}") from None


def first_of_grids(fields: dict) -> dict:
  """A method arm's fields with each hyperparameter grid at its first value."""
  out = dict(fields)
  for field in ("weighting_hparams", "aggregator_hparams"):
    if field in out:
      out[field] = {k: (v[0] if isinstance(v, (tuple, list)) else v)
                    for k, v in dict(out[field]).items()}
  return out


def hparam_grid(fields: dict) -> list[tuple]:
  """[((kind, name, value), ...)] per point of a method arm's grids ([()]
  without one); kind is "weighting" or "aggregator"."""
  axes = []
  for field in ("weighting_hparams", "aggregator_hparams"):
    kind = field.split("_")[0]
    for k, v in sorted(dict(fields.get(field, {})).items()):
      if isinstance(v, (tuple, list)):
        axes.append([(kind, k, float(x)) for x in v])
  return [tuple(p) for p in itertools.product(*axes)] if axes else [()]


def _check_method(cfg, m=None) -> None:
  """config.method: registered names, known hyperparameters, rep_grad."""
  from mtljax import registry  # pylint: disable=g-import-not-at-top
  m = cfg.method if m is None else m
  weighting = registry.WEIGHTINGS.get(m.weighting)
  aggregator = (None if m.aggregator == "none"
                else registry.AGGREGATORS.get(m.aggregator))
  for field, obj, name in (("weighting_hparams", weighting, m.weighting),
                           ("aggregator_hparams", aggregator, m.aggregator)):
    given = dict(m[field])
    if obj is None:
      if given:
        raise ConfigError(f"config.method.{field}={given!r} is set but "
                          f"config.method.aggregator is 'none'")
      continue
    known = registry.method_hparams(obj)
    for key, value in given.items():
      if key not in known:
        raise ConfigError(
            f"config.method.{field}.{key}: {name!r} has no hyperparameter "
            f"{key!r}; its hyperparameters: {', '.join(known) or 'none'}")
      if not isinstance(value, (int, float, bool, str)):
        raise ConfigError(f"config.method.{field}.{key} must be a number, a "
                          f"bool or a string; got {value!r}")
  if m.weighting != "static" and aggregator is not None:
    raise ConfigError(
        f"config.method.weighting={m.weighting!r} and config.method."
        f"aggregator={m.aggregator!r}: choose one (a weighting scales the "
        "task losses, an aggregator combines the task gradients); set the "
        "other to 'static' / 'none'")
  if m.rep_grad and aggregator is None:
    raise ConfigError("config.method.rep_grad=True needs a gradient "
                      "aggregator (config.method.aggregator is 'none')")
  if any((not isinstance(w, (int, float))) or isinstance(w, bool) or w < 0
         for w in cfg.loss.task_weights):
    raise ConfigError("config.loss.task_weights must be numbers >= 0 (one "
                      f"per task); got {cfg.loss.task_weights!r}")


def _check_selection_metric(cfg) -> None:
  from mtljax import registry  # pylint: disable=g-import-not-at-top
  metric = cfg.train.selection_metric
  known = ["", "primary"] + sorted({
      m for n in registry.TASK_TYPES.names()
      for m in registry.TASK_TYPES.get(n).metrics})
  if metric not in known:
    raise ConfigError(f"config.train.selection_metric={metric!r} is not one of "
                      f"{tuple(known)}")


def _pairs(cfg, field: str) -> None:
  value = cfg.data.tfds[field]
  if not all(isinstance(p, (tuple, list)) and len(p) == 2
             and all(isinstance(x, str) and x for x in p) for p in value):
    raise ConfigError(f"config.data.tfds.{field} must be (name, value) pairs "
                      f"of strings; got {value!r}")


def _check_tfds(cfg) -> None:
  """config.data.tfds: needed (and only meaningful) for "tfds:" names."""
  is_tfds = cfg.data.name.startswith("tfds:")
  for field in ("tasks", "splits"):
    _pairs(cfg, field)
  if is_tfds and not cfg.data.tfds.tasks:
    raise ConfigError(
        f"config.data.name={cfg.data.name!r} needs config.data.tfds.tasks: "
        "(feature path pattern, task type) pairs, e.g. "
        "((\"attributes/*\", \"binary\"),)")
  resize = cfg.data.tfds.resize
  if resize and not (len(resize) == 2 and all(
      isinstance(n, int) and not isinstance(n, bool) and n > 0
      for n in resize)):
    raise ConfigError(f"config.data.tfds.resize must be () or (H, W) positive "
                      f"integers; got {resize!r}")
  if not is_tfds and cfg.data.tfds.tasks:
    raise ConfigError(
        f"config.data.tfds.tasks is set but config.data.name="
        f"{cfg.data.name!r} is not a TFDS dataset (\"tfds:<name>\")")


def tfds_options(cfg) -> dict | None:
  """config.data.tfds as the mapping `data.open_split` takes (None if unset)."""
  if not cfg.data.name.startswith("tfds:"):
    return None
  t = cfg.data.tfds
  return {"tasks": dict(t.tasks), "image": t.image,
          "resize": tuple(t.resize), "splits": dict(t.splits)}


def _is_index(k) -> bool:
  return isinstance(k, int) and not isinstance(k, bool) and k >= 0


def _check_partitions(cfg) -> None:
  """config.partitions: (name, groups) pairs of distinct tasks per arm."""
  names = set(cfg.modes)
  for entry in cfg.partitions:
    if not (isinstance(entry, (tuple, list)) and len(entry) == 2
            and isinstance(entry[0], str) and entry[0]
            and isinstance(entry[1], (tuple, list)) and entry[1]):
      raise ConfigError(
          "config.partitions entries must be (name, ((task, ...), ...)) "
          f"pairs, e.g. ('pairs', ((0, 1), (2, 3))); got {entry!r}")
    name, groups = entry
    if name in names:
      raise ConfigError(f"config.partitions: arm name {name!r} is used twice "
                        "(or is one of config.modes)")
    names.add(name)
    seen = []
    for g in groups:
      if not (isinstance(g, (tuple, list)) and g and all(map(_is_index, g))):
        raise ConfigError(f"config.partitions[{name!r}]: each group must be a "
                          f"non-empty tuple of task indices; got {g!r}")
      seen += list(g)
    dup = sorted({k for k in seen if seen.count(k) > 1})
    if dup:
      raise ConfigError(f"config.partitions[{name!r}]: task {dup[0]} is in "
                        "two groups; an arm is a partition of the tasks")


def _check_grouping(cfg) -> None:
  """config.grouping: budgets > 0; TAG's affinity needs an MTL arm."""
  g = cfg.grouping
  for field in ("param_budgets", "flop_budgets"):
    bad = [b for b in g[field] if not isinstance(b, (int, float))
           or isinstance(b, bool) or b <= 0]
    if bad:
      raise ConfigError(f"config.grouping.{field} must hold numbers > 0; got "
                        f"{tuple(g[field])!r}")
  if g.affinity_every and "mtl" not in cfg.modes:
    raise ConfigError(
        f"config.grouping.affinity_every={g.affinity_every} measures the MTL "
        "runs' task affinity, but config.modes="
        f"{tuple(cfg.modes)!r} has no 'mtl' arm")
