"""The `config.data.tfds` options of a "tfds:<name>" dataset: parsing, and
mapping the dataset's features to tasks and its image (see `tfds_source`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from typing import Any, Mapping

import numpy as np
import tensorflow_datasets as tfds

from mtljax.data import builders
from mtljax.data import sources
from mtljax.data.builders import DataError
from mtljax.tasks import types as task_types

PREFIX = sources.TFDS_PREFIX
SPLITS = tuple(builders.SPLITS)

DEFAULT_OPTIONS = {
    "tasks": {},     # required: {feature path pattern: type or task mapping}
    "image": "image",
    "resize": (),    # () or (H, W)
    "splits": {},    # {our split: TFDS split}, merged into the identity map
}
TASK_TYPES = ("binary", "multiclass", "regression")
_TASK_KEYS = ("type", "num_classes", "loss", "delta")


@dataclasses.dataclass(frozen=True)
class Options:
  """The parsed `config.data.tfds` block (see the module docstring)."""
  tasks: tuple[tuple[str, dict], ...]   # (pattern, {"type": ..., ...})
  image: str
  resize: tuple[int, ...]               # () or (H, W)
  splits: dict[str, str]                # every one of SPLITS -> TFDS split


# ---------------------------------------------------------------------------
# Options.


def _as_dict(value, what: str) -> dict:
  if value is None:
    return {}
  if hasattr(value, "to_dict"):  # ml_collections.ConfigDict.
    value = value.to_dict()
  if isinstance(value, Mapping):
    return dict(value)
  if isinstance(value, (tuple, list)) and all(
      isinstance(p, (tuple, list)) and len(p) == 2 for p in value):
    return dict(value)  # (key, value) pairs, as configs hold them.
  raise DataError(f"{what} must be a mapping or (key, value) pairs; got "
                  f"{value!r}")


def _task_string(pattern: str, text: str) -> dict:
  """"binary", "multiclass:10", "regression:huber" or "regression:huber:0.5".

  The string form is what a config (string pairs) and a command line hold.
  """
  kind, *rest = [p.strip() for p in text.split(":")]
  task = {"type": kind}
  try:
    if kind == "multiclass" and len(rest) == 1:
      task["num_classes"] = int(rest[0])
    elif kind == "regression" and 1 <= len(rest) <= 2:
      task["loss"] = rest[0]
      if len(rest) == 2:
        task["delta"] = float(rest[1])
    elif rest:
      raise ValueError
  except ValueError:
    raise DataError(
        f"data.tfds.tasks[{pattern!r}]: {text!r} is not a task; use a type "
        "(binary, multiclass, regression), multiclass:K (K classes), or "
        "regression:LOSS[:DELTA] (mse, huber, l1)") from None
  return task


def _parse_tasks(value) -> tuple[tuple[str, dict], ...]:
  if isinstance(value, str):
    pairs = []
    for item in filter(None, (s.strip() for s in value.split(","))):
      pattern, sep, kind = item.rpartition("=")
      if not sep or not pattern.strip():
        raise DataError(f"data.tfds.tasks: {item!r} is not PATTERN=TYPE "
                        "(e.g. 'attributes/*=binary,label=multiclass')")
      pairs.append((pattern.strip(), kind.strip()))
  else:
    pairs = list(_as_dict(value, "data.tfds.tasks").items())
  out = []
  for pattern, task in pairs:
    if not isinstance(pattern, str) or not pattern:
      raise DataError(f"data.tfds.tasks: a pattern must be a non-empty "
                      f"string; got {pattern!r}")
    if isinstance(task, str):
      task = _task_string(pattern, task)
    else:
      task = _as_dict(task, f"data.tfds.tasks[{pattern!r}]")
      unknown = sorted(set(task) - set(_TASK_KEYS))
      if unknown:
        raise DataError(f"data.tfds.tasks[{pattern!r}]: unknown keys "
                        f"{unknown}; valid keys: {list(_TASK_KEYS)}")
    if task.get("type") not in TASK_TYPES:
      raise DataError(f"data.tfds.tasks[{pattern!r}]: the task type must be "
                      f"one of {list(TASK_TYPES)}; got {task.get('type')!r}")
    out.append((pattern, task))
  return tuple(out)


def _parse_resize(value) -> tuple[int, ...]:
  if value is None or (not isinstance(value, (int, np.integer, str))
                       and len(value) == 0):
    return ()
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    value = (value, value)
  try:
    size = tuple(value)
    ok = len(size) == 2 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0
        for s in size)
  except TypeError:
    ok = False
  if not ok:
    raise DataError(f"data.tfds.resize must be () or (height, width), two "
                    f"positive ints; got {value!r}")
  return tuple(int(s) for s in size)


def parse_options(tfds_options) -> Options:
  """Validates `config.data.tfds` (a mapping or ConfigDict; None: defaults)."""
  given = _as_dict(tfds_options, "data.tfds")
  unknown = sorted(set(given) - set(DEFAULT_OPTIONS))
  if unknown:
    raise DataError(f"data.tfds has unknown keys {unknown}; valid keys: "
                    f"{list(DEFAULT_OPTIONS)}")
  o = {**DEFAULT_OPTIONS, **given}
  image = o["image"]
  if not isinstance(image, str) or not image:
    raise DataError(f"data.tfds.image must be a feature path; got {image!r}")
  splits = {s: s for s in SPLITS}
  for ours, theirs in _as_dict(o["splits"], "data.tfds.splits").items():
    if ours not in SPLITS:
      raise DataError(f"data.tfds.splits: unknown split {ours!r}; valid "
                      f"splits: {list(SPLITS)}")
    if not isinstance(theirs, str) or not theirs.strip():
      raise DataError(f"data.tfds.splits[{ours!r}] must be a TFDS split "
                      f"string such as 'train[:90%]'; got {theirs!r}")
    splits[ours] = theirs.strip()
  return Options(tasks=_parse_tasks(o["tasks"]), image=image,
                 resize=_parse_resize(o["resize"]), splits=splits)


# ---------------------------------------------------------------------------
# The builder and its features.


def tfds_name(name: str) -> str:
  """"tfds:celeb_a:2.1.0" -> "celeb_a:2.1.0" (what `tfds.builder` takes)."""
  if not sources.is_tfds(name) or not name[len(PREFIX):].strip():
    raise DataError(f"a TFDS dataset name looks like 'tfds:celeb_a' (or "
                    f"'tfds:celeb_a:2.1.0'); got {name!r}")
  return name[len(PREFIX):].strip()


def prepare_instructions(name: str, data_dir: str) -> str:
  """How to prepare TFDS dataset `name` once (the not-prepared message)."""
  return (
      "mtljax reads prepared TFDS datasets and never downloads one. Prepare it "
      "once, on a machine with internet access (TensorFlow is needed only "
      "there):\n"
      "    pip install tensorflow tensorflow-datasets\n"
      f"    tfds build {name} --file_format=array_record --data_dir {data_dir}\n"
      "  or, in Python:\n"
      f"    tfds.builder({name!r}, data_dir={data_dir!r})"
      ".download_and_prepare(file_format=\"array_record\")\n"
      "then (copying that data dir here if it was prepared elsewhere) set "
      "config.data.data_dir, or $TFDS_DATA_DIR, to it")


def _not_prepared(name: str, data_dir: str, builder=None) -> DataError:
  where = os.fspath(builder.data_path) if builder is not None else os.path.join(
      data_dir, name.split(":")[0])
  return DataError(f"TFDS dataset {name!r} is not prepared in data dir "
                   f"'{data_dir}' (nothing at '{where}'). "
                   + prepare_instructions(name, data_dir))


def get_builder(name: str, data_dir=None):
  """`tfds.builder` for "tfds:<name>", as a DataError where it fails."""
  data_dir = builders.resolve_data_dir(data_dir)
  short = tfds_name(name)
  try:
    return tfds.builder(short, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DataError(
        f"unknown TFDS dataset {short!r}: TFDS has no such builder and nothing "
        f"is prepared under '{data_dir}' ({builders.error_text(e)}). Check the "
        f"name (see `tfds build --help` or the TFDS catalog). "
        + prepare_instructions(short, data_dir)) from None
  except Exception as e:  # noqa: BLE001  (e.g. an unknown version)
    raise DataError(f"cannot open TFDS dataset {short!r} in '{data_dir}': "
                    f"{type(e).__name__}: {builders.error_text(e)}") from None


@dataclasses.dataclass(frozen=True)
class _Feature:
  path: str
  feature: Any
  kind: str          # "bool", "int", "float", "class" or "other".
  num_classes: int | None = None

  def describe(self) -> str:
    f = self.feature
    if self.kind == "class":
      return f"{self.path} (ClassLabel, {self.num_classes} classes)"
    if self.kind in ("bool", "int", "float"):
      return f"{self.path} ({np.dtype(f.np_dtype).name})"
    shape = getattr(f, "shape", None)
    dtype = getattr(f, "np_dtype", None)
    extra = "" if shape is None else f" {tuple(shape)}"
    if dtype is not None and not isinstance(shape, dict):
      try:
        extra += f" {np.dtype(dtype).name}"
      except TypeError:
        pass
    return f"{self.path} ({type(f).__name__}{extra})"


def _flat_features(features, prefix: str = "") -> list[_Feature]:
  """Every leaf feature of a (nested) FeaturesDict, in dict order."""
  out = []
  for key, f in features.items():
    path = f"{prefix}{key}"
    if isinstance(f, tfds.features.FeaturesDict):
      out.extend(_flat_features(f, path + "/"))
      continue
    kind, k = "other", None
    if isinstance(f, tfds.features.ClassLabel):
      kind, k = "class", f.num_classes
    elif (isinstance(f, tfds.features.Tensor)
          and not isinstance(f, tfds.features.Text)
          and tuple(f.shape) == ()):
      dk = np.dtype(f.np_dtype).kind
      kind = {"b": "bool", "i": "int", "u": "int", "f": "float"}.get(dk,
                                                                     "other")
    out.append(_Feature(path, f, kind, k))
  return out


def _available(flat) -> str:
  names = [f.describe() for f in sorted(flat, key=lambda f: f.path)]
  if len(names) > 80:
    names = names[:80] + [f"... and {len(names) - 80} more"]
  return "available feature paths: " + ", ".join(names)


def _match(pattern: str, path: str) -> bool:
  pp, ss = pattern.split("/"), path.split("/")
  return len(pp) == len(ss) and all(
      fnmatch.fnmatchcase(s, p) for p, s in zip(pp, ss))


def _make_task(short: str, feat: _Feature, task: dict) -> task_types.Task:
  kind, t = feat.kind, task["type"]
  what = f"TFDS dataset {short!r}: feature {feat.describe()}"
  if kind == "other":
    raise DataError(f"{what} cannot be a {t} task: a task needs a scalar "
                    "bool, integer, float or ClassLabel feature")
  k = task.get("num_classes")
  if t == "binary":
    if kind == "class" and feat.num_classes != 2:
      raise DataError(f"{what} cannot be a binary task (it has "
                      f"{feat.num_classes} classes); make it 'multiclass'")
  elif t == "multiclass":
    if kind == "class":
      if k is not None and k != feat.num_classes:
        raise DataError(f"{what}: num_classes {k!r} differs from the "
                        f"feature's {feat.num_classes}; leave it out")
      k = feat.num_classes
    elif kind != "int" or k is None:
      raise DataError(
          f"{what} cannot be a multiclass task: that needs a ClassLabel "
          "feature (which gives num_classes), or an integer feature with "
          "{'type': 'multiclass', 'num_classes': K}")
  elif kind in ("bool", "class"):
    raise DataError(f"{what} cannot be a regression task: that needs an "
                    "integer or float feature; use 'binary' or 'multiclass'")
  kw = {key: task[key] for key in ("loss", "delta") if key in task}
  try:
    return task_types.Task(feat.path, t, num_classes=(
        k if t == "multiclass" else None), **kw)
  except ValueError as e:
    raise DataError(f"{what}: {e}") from None


def resolve_tasks(short: str, features, options: Options) -> tuple:
  """The tasks of `options.tasks` over `features`, in sorted path order."""
  flat = _flat_features(features)
  if not options.tasks:
    raise DataError(
        f"TFDS dataset {short!r}: set data.tfds.tasks, a map from feature "
        "paths (globs) to task types, e.g. {'attributes/*': 'binary'} or "
        "{'label': 'multiclass'}; " + _available(flat))
  chosen = {}
  for pattern, task in options.tasks:
    hits = [f for f in flat if _match(pattern, f.path)]
    if not hits:
      raise DataError(f"TFDS dataset {short!r}: data.tfds.tasks pattern "
                      f"{pattern!r} matches no feature; " + _available(flat))
    for f in hits:
      if f.path == options.image:
        raise DataError(f"TFDS dataset {short!r}: pattern {pattern!r} "
                        f"matches the image feature {f.path!r}")
      if f.path in chosen:
        raise DataError(f"TFDS dataset {short!r}: feature {f.path!r} is "
                        f"matched by two patterns, {chosen[f.path][0]!r} and "
                        f"{pattern!r}")
      chosen[f.path] = (pattern, f, task)
  return tuple(_make_task(short, f, task)
               for _, (_, f, task) in sorted(chosen.items()))


def image_feature_shape(short: str, features, options: Options):
  """(stored shape (H, W, C) with None for a variable size, output shape)."""
  flat = {f.path: f for f in _flat_features(features)}
  f = flat.get(options.image)
  if f is None:
    raise DataError(f"TFDS dataset {short!r}: no image feature "
                    f"{options.image!r} (set data.tfds.image); "
                    + _available(flat.values()))
  feat = f.feature
  shape = tuple(getattr(feat, "shape", ()) or ())
  dtype = getattr(feat, "np_dtype", None)
  ok = (isinstance(feat, (tfds.features.Image, tfds.features.Tensor))
        and not isinstance(feat, tfds.features.Text)
        and len(shape) in (2, 3) and dtype is not None
        and np.dtype(dtype) == np.uint8)
  if not ok:
    raise DataError(f"TFDS dataset {short!r}: image feature {f.describe()} "
                    "is not a uint8 image [H, W, C] (or [H, W])")
  if len(shape) == 2:
    shape = shape + (1,)
  if shape[2] is None:
    raise DataError(f"TFDS dataset {short!r}: image feature "
                    f"{f.describe()} has no fixed channel count")
  if options.resize:
    out = tuple(options.resize) + (shape[2],)
  elif None in shape[:2]:
    raise DataError(f"TFDS dataset {short!r}: images of feature "
                    f"{f.describe()} vary in size; set data.tfds.resize = "
                    "(height, width)")
  else:
    out = shape
  return shape, tuple(int(s) for s in out)
