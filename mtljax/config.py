"""Configs: defaults, `path:arg` loading, `--config.x=y` overrides, validation.

An experiment is a python file with `get_config(arg=None)` returning an
`ml_collections.ConfigDict` built on `default_config()`, and optionally
`get_sweep(h, arg=None)` returning the sweep written next to it::

    def get_sweep(h, arg=None):
      return h.product([h.sweep("model.width", [4, 16, 64]),
                        h.sweep("data.label_budget", [300, -1])])

    cfg = load_config("experiments/e1_mtl_vs_stl.py:quick", ["model.width=32"])
    points = load_sweep("experiments/e1_mtl_vs_stl.py:quick")   # list of overrides

Every field is checked against `default_config()` before anything compiles:
an unknown or misspelled key, a wrong type or an impossible value raises
ConfigError naming the field and the value.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import itertools
import math
import os
from typing import Any, Sequence

import ml_collections

from mtljax import errors


ConfigError = errors.ConfigError


def default_config() -> ml_collections.ConfigDict:
  """Every config field, with its default. Experiments start from this."""
  c = ml_collections.ConfigDict()
  c.name = "experiment"             # experiment name, recorded in results.json
  c.seed = 0                        # first seed; runs use seed .. seed+num_seeds-1
  c.num_seeds = 3                   # seeds, vmapped: one compilation for all
  # Arms trained side by side on the same batches (paired by seed): "mtl" (one
  # shared encoder), "stl" (T single-task networks of the same width) and
  # "stl_matched" (T single-task networks whose total size ≈ the MTL network).
  c.modes = ("mtl", "stl")
  # Tasks (indices) that the STL arms learn; (): all. Experiments that only
  # read one target task's MTL−STL difference skip the other T−1 networks.
  c.stl_tasks = ()
  c.arm_suffix = ""                 # results arm = mode + suffix, e.g. "mtl_negative"
  c.num_devices = 0                 # 0: all devices on the "data" mesh axis

  c.data = ml_collections.ConfigDict()
  c.data.name = "mtl_scenes"        # see `mtljax data list`
  c.data.data_dir = ""              # "": $TFDS_DATA_DIR, else TFDS's default
  c.data.train_examples = -1        # first N training examples (-1: all)
  c.data.eval_examples = -1         # cap on validation/test examples (-1: all)
  c.data.label_fraction = (-1.0,)   # per task (or one value): kept fraction; -1: all
  c.data.label_budget = (-1,)       # per task (or one value): labelled examples; -1: all
  c.data.shuffle_tasks = ()         # task indices whose labels are shuffled (Caruana)
  c.data.split_sizes = ()           # (train, val, test) to build; (): the dataset's default

  c.model = ml_collections.ConfigDict()
  c.model.encoder = "cnn"           # "cnn" or "mlp"
  c.model.width = 16                # the size knob: hidden units / base channels
  c.model.depth = 3                 # layers (mlp) or conv stages (cnn)
  c.model.head_hidden = 0           # per-task hidden units in each head (0: linear)
  c.model.dropout = 0.0
  c.model.pool = "max"              # cnn pooling, 2×2 and global: "max" or "avg"
  c.model.dtype = "float32"         # compute dtype: "float32" or "bfloat16"

  c.loss = ml_collections.ConfigDict()
  c.loss.normalize = "per_example"  # "per_example" (seed), "per_label", "per_task"
  # How "?" labels are treated; each policy is a separate arm trained side by
  # side ("mask": the seed's rule; "negative": "?" = 0; "drop": drop examples
  # with any "?"). Arms other than "mask" are named e.g. "mtl_negative".
  c.loss.missing_policies = ("mask",)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"         # "adam", "adamw", "sgd"
  c.optimizer.learning_rates = (1e-3,)  # grid, same for every mode; picked on val
  c.optimizer.schedule = "constant"  # "constant", "cosine", "warmup_cosine"
  c.optimizer.warmup_steps = 0
  c.optimizer.weight_decay = 0.0    # adamw only
  c.optimizer.momentum = 0.9        # sgd only
  c.optimizer.grad_clip_norm = 0.0  # 0: no clipping

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128          # global batch, split over devices
  c.train.steps = 1000
  c.train.eval_every = 100          # validation + best-checkpoint selection
  c.train.log_every = 50
  c.train.checkpoint_every = 200
  c.train.keep_checkpoints = 2
  c.train.selection_metric = "auc"  # "auc", "ap", "acc" (higher) or "loss" (lower)
  c.train.nonfinite_policy = "halt"  # "halt" or "skip"
  # Under "skip": warn (log, results.json, report.md) when a run skipped more
  # than this share of its steps.
  c.train.warn_skipped_share = 0.1
  c.train.progress = "auto"         # "auto" (bar on a tty), "bar", "log", "none"
  # How the [seeds, groups] runs are mapped in the step: "vmap" (one batched
  # program), "scan" (one run at a time, by a loop inside the jit), "unroll"
  # (R copies in one jit; slow to compile) or "auto" (step.default_run_map:
  # vmap on accelerators, scan where XLA:CPU runs vmapped layers slowly).
  # Results agree up to float rounding.
  c.train.run_map = "auto"
  return c


_CHOICES = {
    "modes": ("mtl", "stl", "stl_matched"),
    "model.encoder": ("cnn", "mlp"),
    "model.pool": ("max", "avg"),
    "model.dtype": ("float32", "bfloat16"),
    "loss.normalize": ("per_example", "per_label", "per_task"),
    "loss.missing_policies": ("mask", "negative", "drop"),
    "optimizer.name": ("adam", "adamw", "sgd"),
    "optimizer.schedule": ("constant", "cosine", "warmup_cosine"),
    "train.selection_metric": ("auc", "ap", "acc", "loss"),
    "train.nonfinite_policy": ("halt", "skip"),
    "train.progress": ("auto", "bar", "log", "none"),
    "train.run_map": ("auto", "vmap", "unroll", "scan"),
}
_POSITIVE = ("num_seeds", "model.width", "model.depth", "train.batch_size",
             "train.steps", "train.eval_every", "train.log_every",
             "train.checkpoint_every", "train.keep_checkpoints")
_NON_NEGATIVE = ("seed", "num_devices", "model.head_hidden",
                 "optimizer.warmup_steps", "optimizer.weight_decay",
                 "optimizer.grad_clip_norm", "optimizer.momentum")


# Fields that change how a run is displayed or kept, not what it computes: a
# resume, or a rerun into a finished workdir, with other values of these is
# allowed. nonfinite_policy only acts once a step is non-finite, and a halted
# run is meant to be resumed with "skip" (the halt message says so).
COSMETIC_FIELDS = ("name", "data.data_dir", "train.progress",
                   "train.log_every", "arm_suffix", "train.run_map",
                   "train.nonfinite_policy", "train.keep_checkpoints",
                   "train.warn_skipped_share")


def _flatten(cfg, prefix="") -> dict[str, Any]:
  out = {}
  for k, v in cfg.items():
    key = f"{prefix}{k}"
    if isinstance(v, ml_collections.ConfigDict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def flatten_dict(d: dict, prefix: str = "") -> dict[str, Any]:
  """{dotted key: value} of a nested plain dict (a config read from JSON)."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten_dict(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _json_form(v):
  # JSON turns tuples into lists: compare configs in their JSON form.
  if isinstance(v, (tuple, list)):
    return [_json_form(x) for x in v]
  return v


def differences(ours: dict, theirs: dict) -> list[tuple[str, Any, Any]]:
  """Computational fields in which two flat configs differ.

  Args:
    ours: {dotted key: value} of this config.
    theirs: the same of another run (e.g. read back from JSON).

  Returns:
    [(key, our value, their value)] sorted by key, ignoring COSMETIC_FIELDS.
    A field that `theirs` lacks (it predates the field) counts as equal when
    ours holds the field's default.
  """
  defaults = _flatten(default_config())
  out = []
  for k in sorted(set(ours) | set(theirs)):
    if k in COSMETIC_FIELDS:
      continue
    b = theirs[k] if k in theirs else defaults.get(k)
    if _json_form(ours.get(k)) != _json_form(b):
      out.append((k, ours.get(k), theirs.get(k)))
  return out


def describe_differences(diff, where: str, limit: int = 3) -> str:
  """"config.x=1 here but 2 in <where>; ..." for the first `limit` fields."""
  parts = [f"config.{k}={a!r} here but {b!r} in {where}"
           for k, a, b in diff[:limit]]
  more = f" and {len(diff) - limit} more" if len(diff) > limit else ""
  return "; ".join(parts) + more


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


def validate(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks every field of `cfg` against the schema; returns a coerced copy.

  Raises:
    ConfigError: naming the first unknown field, wrong type or bad value.
  """
  defaults = _flatten(default_config())
  given = _flatten(cfg)
  for key in given:
    if key not in defaults:
      raise _unknown(key, defaults)
  out = default_config()
  for key, value in given.items():
    value = _coerce(key, value, defaults[key])
    node = out
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  flat = _flatten(out)
  for key, choices in _CHOICES.items():
    values = flat[key] if isinstance(flat[key], tuple) else (flat[key],)
    for v in values:
      if v not in choices:
        raise ConfigError(f"config.{key}={v!r} is not one of {choices}")
  for key, value in flat.items():
    # NaN passes every `<`/`>` check below, and inf is never meant.
    for v in value if isinstance(value, tuple) else (value,):
      if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"config.{key} must be finite; got {value!r}")
  for key in ("data.train_examples", "data.eval_examples"):
    if flat[key] != -1 and flat[key] <= 0:
      raise ConfigError(f"config.{key} must be > 0 (or -1 for all); got "
                        f"{flat[key]!r}")
  for key in _POSITIVE:
    if flat[key] <= 0:
      raise ConfigError(f"config.{key} must be > 0; got {flat[key]!r}")
  for key in _NON_NEGATIVE:
    if flat[key] < 0:
      raise ConfigError(f"config.{key} must be >= 0; got {flat[key]!r}")
  if not out.loss.missing_policies or len(set(out.loss.missing_policies)) != len(
      out.loss.missing_policies):
    raise ConfigError("config.loss.missing_policies must be non-empty without "
                      f"duplicates; got {out.loss.missing_policies!r}")
  if not out.modes:
    raise ConfigError("config.modes is empty: give at least one of ('mtl', 'stl')")
  if len(set(out.modes)) != len(out.modes):
    raise ConfigError(f"config.modes has duplicates: {out.modes!r}")
  lrs = out.optimizer.learning_rates
  if not lrs or any(lr <= 0 for lr in lrs):
    raise ConfigError(f"config.optimizer.learning_rates must be non-empty and "
                      f"> 0; got {lrs!r}")
  for f in out.data.label_fraction:
    if f != -1.0 and not 0.0 <= f <= 1.0:
      raise ConfigError(f"config.data.label_fraction values must be in [0, 1] "
                        f"(or -1 for all); got {f!r}")
  for b in out.data.label_budget:
    if b < -1:
      raise ConfigError(f"config.data.label_budget values must be >= 0 (or -1 "
                        f"for all); got {b!r}")
  if not 0.0 <= out.train.warn_skipped_share <= 1.0:
    raise ConfigError("config.train.warn_skipped_share must be in [0, 1]; got "
                      f"{out.train.warn_skipped_share!r}")
  if not 0.0 <= out.model.dropout < 1.0:
    raise ConfigError(f"config.model.dropout must be in [0, 1); got "
                      f"{out.model.dropout!r}")
  if len(set(out.stl_tasks)) != len(out.stl_tasks) or any(
      not isinstance(k, int) or isinstance(k, bool) or k < 0
      for k in out.stl_tasks):
    raise ConfigError("config.stl_tasks must hold distinct task indices "
                      f"(integers >= 0); got {out.stl_tasks!r}")
  for k in out.data.shuffle_tasks:
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
      raise ConfigError("config.data.shuffle_tasks must hold task indices "
                        f"(integers >= 0); got {out.data.shuffle_tasks!r}")
  if out.data.split_sizes and (len(out.data.split_sizes) != 3
                               or min(out.data.split_sizes) <= 0):
    raise ConfigError("config.data.split_sizes must be () or three positive "
                      f"sizes (train, validation, test); got "
                      f"{out.data.split_sizes!r}")
  if out.train.eval_every > out.train.steps:
    raise ConfigError(f"config.train.eval_every={out.train.eval_every} exceeds "
                      f"config.train.steps={out.train.steps}: no validation "
                      "would run, so no checkpoint could be selected")
  if out.train.batch_size % max(out.num_devices, 1):
    raise ConfigError(f"config.train.batch_size={out.train.batch_size} is not "
                      f"divisible by config.num_devices={out.num_devices}")
  return out


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
    if key not in defaults:
      raise _unknown(key, defaults)
    node = out
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = _coerce(key, value, defaults[key])
  return out


def _load_module(path: str):
  if not os.path.isfile(path):
    raise ConfigError(f"config file not found: {path!r}")
  name = "mtljax_experiment_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
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


def to_dict(cfg: ml_collections.ConfigDict) -> dict:
  """JSON-friendly nested dict of a config."""
  def conv(v):
    if isinstance(v, ml_collections.ConfigDict):
      return {k: conv(x) for k, x in v.items()}
    if isinstance(v, tuple):
      return list(v)
    return v
  return conv(cfg)
