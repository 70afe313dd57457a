"""Datasets from in-memory arrays: `register_arrays`, built like the built-ins.

    spec = mtljax.data.register_arrays(
        "my_data",
        splits={"train": (x_tr, y_tr), "validation": (x_va, y_va),
                "test": (x_te, y_te)},
        tasks=[mtljax.tasks.Binary("cat"),
               mtljax.tasks.Multiclass("digit", num_classes=10),
               mtljax.tasks.Regression("age")])
    source = mtljax.data.sources.open_split("my_data", "train")  # builds once

The arrays are validated when registered (nothing is written then), kept in
memory, and written on first use by the ordinary `builders.build` path into
the same ArrayRecord TFDS layout as the built-in datasets (a real
`tfds.core.GeneratorBasedBuilder`; features `image` uint8 [H, W, C],
`labels` float32 [T], `index` int64), so checksums, resume after an
interrupted build and byte-identical rebuilds hold for them too.

The build's config name is `h<first 16 hex digits of a sha256>` of the
content (stored image and label bytes, shapes and dtypes, the tasks'
`to_json`, `image_range`): changed arrays get a new build directory and are
never silently read from an old one, and registering the same content again
(a notebook re-running a cell) finds the existing build.
"""

from __future__ import annotations

import hashlib
import json
import re
import types
from typing import Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from mtljax import errors
from mtljax import registry
from mtljax.data import builders
from mtljax.data import procedural
from mtljax.data import specs
from mtljax.data.checksums import SPLITS
from mtljax.tasks import types as task_types

DataError = errors.DataError

# Part of the content hash: bump it if what a given content writes changes
# (so that builds of the old format are not reused).
_HASH_FORMAT = 1
# Float images are validated and converted this many examples at a time:
# the float64 intermediate of a whole split could be several GB.
_CONVERT_CHUNK = 4096
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*$")

# Content hash -> {split: (uint8 images, float32 labels)}: the arrays the
# generator writes. Kept here, not on the builder classes: TFDS keeps a
# reference to every builder class it has seen (`registered.
# _MODULE_TO_DATASETS`), so arrays held by a class would never be freed when
# a notebook re-registers a name with new arrays.
_STORE: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
# Registered dataset name -> the content hash it currently points to.
_NAMES: dict[str, str] = {}


# pylint: disable-next=protected-access
class ArraysBuilder(procedural._ProceduralBuilder, skip_registration=True):
  """Writes arrays given to `register_arrays` (one subclass per registration).

  Each subclass sets `name` (the build's directory), `DATASET` (the
  registered name), `CONTENT_HASH`, `IMAGE_SHAPE`, `TASK_NAMES`, `TASKS` and
  one builder config named after the content hash.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  # Class indices and regression values in one array: float32, "?" = -1 or
  # NaN (see `mtljax.tasks.types`).
  LABEL_DTYPE = np.float32
  CHUNK_SIZE = 1000
  DATASET = ""
  CONTENT_HASH = ""
  IMAGE_SHAPE: tuple[int, int, int] = ()

  def _image_shape(self):
    return self.IMAGE_SHAPE

  def _chunks(self, split: str, num_examples: int):
    arrays = _STORE.get(self.CONTENT_HASH)
    if arrays is None:
      raise DataError(
          f"the arrays of dataset {self.DATASET!r} (content "
          f"{self.CONTENT_HASH[:16]}) are no longer in memory: the name was "
          "registered again with other arrays; use the builder of the new "
          "registration")
    images, labels = arrays[split]
    if num_examples != len(images):  # `builders` enforces fixed_sizes.
      raise DataError(f"dataset {self.DATASET!r} split {split!r} holds "
                      f"{len(images)} examples, not {num_examples}")
    # Chunks of CHUNK_SIZE: the base class draws `missing_rate` per chunk.
    for start in range(0, num_examples, self.CHUNK_SIZE):
      stop = start + self.CHUNK_SIZE
      yield images[start:stop], labels[start:stop]


def register_arrays(name: str, splits: Mapping[str, tuple], tasks: Sequence,
                    *, image_range: tuple[float, float] | None = None
                    ) -> specs.DatasetSpec:
  """Registers in-memory arrays as a dataset, usable like the built-ins.

  Everything is validated here and nothing is written: the dataset is built
  (into `<data_dir>/arrays_<name>/h<hash>/1.0.0`, ArrayRecord) on first use,
  by `data.build`, `sources.open_split` or a training run in this process.
  Its split sizes are the arrays' own (`split_sizes` asking for others is a
  DataError); `missing_rate` hides labels as "?" as for the built-ins.

  Example:

      spec = mtljax.data.register_arrays(
          "my_data",
          splits={"train": (x_tr, y_tr), "validation": (x_va, y_va),
                  "test": (x_te, y_te)},
          tasks=[mtljax.tasks.Binary("cat"),
                 mtljax.tasks.Multiclass("digit", num_classes=10),
                 mtljax.tasks.Regression("age")])
      # x_*: uint8 [N, H, W, C] (or [N, H, W]); y_*: [N, 3], e.g. the row
      # [1, 7, 31.5] or, with "?" labels, [-1, -1, NaN].
      config.data.name = "my_data"

  Args:
    name: the dataset's name (letters, digits, "_", "-", ".", "/"). Using it
      again replaces that registration (arrays registered earlier under
      another name stay); a built-in dataset's name or alias is refused.
    splits: {"train": (images, labels), "validation": ..., "test": ...}, all
      three. images: uint8 [N, H, W, C] or [N, H, W] (stored with C = 1), or
      any other numeric dtype with `image_range`; the same H, W, C in every
      split. labels: [N, T], one column per task, in `tasks` order (or [N]
      for a single task): binary 0/1, multiclass class index 0..K-1,
      regression the value; "?" is -1 for classification tasks and NaN
      for regression.
    tasks: the T `mtljax.tasks.Task`s (`Binary`, `Multiclass`, `Regression`).
    image_range: (lo, hi), the range of the pixel values, e.g. (0.0, 1.0) or
      (0, 255). Required for images that are not uint8 (the stored images
      are uint8 and the pipeline normalises them as x / 255 - 0.5); pixels
      are mapped to round((x - lo) / (hi - lo) * 255), half to even.

  Returns:
    The dataset's `DatasetSpec` (its tasks, image shape and split sizes).

  Raises:
    DataError: before anything is registered or written, naming the split
      (and the task, example and value) of the first problem: a missing or
      unknown split; images that are not [N, H, W(, C)], differ in shape
      between splits, are float without `image_range`, or hold a pixel that
      is non-finite or outside it; labels whose row count differs from the
      images', whose column count differs from the tasks, or holding a value
      that is neither valid nor "?" (a class index >= K, a non-integer class,
      a binary label not 0/1, a negative class other than -1, an infinite
      regression target); an empty split; a name that is invalid or taken
      by a dataset not registered from arrays.
  """
  name = _check_name(name)
  try:
    tasks = task_types.check_tasks(tasks)
  except ValueError as e:
    raise DataError(f"register_arrays({name!r}): {e}") from None
  image_range = _check_image_range(image_range)
  if not isinstance(splits, Mapping):
    raise DataError(f"register_arrays({name!r}): splits must be a mapping "
                    f"{{split: (images, labels)}} with the splits {SPLITS}; "
                    f"got {type(splits).__name__}")
  unknown = [s for s in splits if s not in SPLITS]
  if unknown:
    raise DataError(f"register_arrays({name!r}): unknown split(s) {unknown}; "
                    f"the splits are {SPLITS}")
  missing = [s for s in SPLITS if s not in splits]
  if missing:
    raise DataError(f"register_arrays({name!r}): missing split(s) {missing}; "
                    f"all of {SPLITS} are needed (validation selects "
                    "hyperparameters and checkpoints, test is reported)")
  stored, input_dtypes = {}, {}
  for split in SPLITS:
    where = f"register_arrays({name!r}) split {split!r}"
    pair = splits[split]
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
      raise DataError(f"{where}: expected a pair (images, labels); got "
                      f"{type(pair).__name__}")
    images, dtype = _images(where, pair[0], image_range)
    labels = _labels(where, pair[1], tasks)
    if len(labels) != len(images):
      raise DataError(f"{where}: {len(images)} images but {len(labels)} "
                      "label rows")
    stored[split], input_dtypes[split] = (images, labels), dtype
  shapes = {s: stored[s][0].shape[1:] for s in SPLITS}
  if len(set(shapes.values())) > 1:
    raise DataError(f"register_arrays({name!r}): the image shape (H, W, C) "
                    f"differs between splits: {shapes}")

  content = _content_hash(stored, tasks, image_range, input_dtypes)
  sizes = tuple(len(stored[s][0]) for s in SPLITS)
  image_shape = tuple(int(d) for d in shapes["train"])
  builder = _builder_class(name, content, image_shape, tasks, sizes)
  entry = specs.DatasetEntry(
      builder, builder.BUILDER_CONFIGS[0].name,
      tuple(t.name for t in tasks), image_shape, sizes,
      task_types=tuple(t.type for t in tasks), tasks=tasks, fixed_sizes=True)
  _STORE[content] = stored
  _NAMES[name] = content
  # Replacing is explicit here and limited to names registered from arrays
  # (checked in `_check_name`): a notebook re-running its cell.
  registry.DATASETS.register(name, entry, overwrite=True)
  for h in set(_STORE) - set(_NAMES.values()):
    del _STORE[h]  # No name points to those arrays any more.
  return builders.dataset_spec(name)


def _check_name(name) -> str:
  """The name, if it is valid and free (or registered from arrays before)."""
  if not isinstance(name, str) or not _NAME_RE.match(name):
    raise DataError(
        f"register_arrays: the dataset name must be a non-empty string of "
        f"letters, digits, '_', '-', '.' and '/' starting with a letter or "
        f"digit; got {name!r}")
  for other in registry.DATASETS.names():
    entry = registry.DATASETS.get(other)
    if _from_arrays(entry):
      continue
    if other == name or name in entry.aliases:
      raise DataError(
          f"register_arrays: {name!r} is the name of the dataset {other!r}, "
          "which was not registered from arrays; choose another name")
  return name


def _from_arrays(entry) -> bool:
  builder = getattr(entry, "builder", None)
  return isinstance(builder, type) and issubclass(builder, ArraysBuilder)


def _check_image_range(image_range):
  if image_range is None:
    return None
  try:
    lo, hi = (float(v) for v in image_range)
  except (TypeError, ValueError):
    lo = hi = float("nan")
  if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
    raise DataError("register_arrays: image_range must be (lo, hi) with "
                    f"finite lo < hi, e.g. (0.0, 1.0) or (0, 255); got "
                    f"{image_range!r}")
  return (lo, hi)


def _images(where: str, images, image_range) -> tuple[np.ndarray, str]:
  """(uint8 [N, H, W, C] copy, input dtype name): validated and converted."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]  # [N, H, W]: one channel.
  if images.ndim != 4 or 0 in images.shape[1:]:
    raise DataError(f"{where}: images must have shape [N, H, W, C] or "
                    f"[N, H, W]; got shape {np.shape(images)}")
  if len(images) == 0:
    raise DataError(f"{where}: the split is empty (N = 0); every split needs "
                    "at least one example")
  dtype = images.dtype
  if dtype.kind not in "biuf":
    raise DataError(f"{where}: images must be numeric (uint8, or float with "
                    f"image_range); got dtype {dtype}")
  if image_range is None:
    if dtype != np.uint8:
      raise DataError(
          f"{where}: images are {dtype}, not uint8; pass image_range=(lo, "
          "hi), the range of their values, e.g. image_range=(0.0, 1.0) or "
          "(0, 255), and they are stored as uint8 0..255")
    # A copy: the user's array may change after registration, and the
    # content hash must describe what is written.
    return np.array(images, np.uint8, order="C", copy=True), dtype.name
  lo, hi = image_range
  out = np.empty(images.shape, np.uint8)
  for start in range(0, len(images), _CONVERT_CHUNK):
    x = images[start:start + _CONVERT_CHUNK].astype(np.float64)
    bad = ~np.isfinite(x) | (x < lo) | (x > hi)
    if bad.any():
      i = np.argwhere(bad)[0]
      value = images[start + i[0]][tuple(i[1:])].item()
      raise DataError(
          f"{where}: pixel value {value!r} at example {start + int(i[0])} "
          f"(position {tuple(int(v) for v in i[1:])}) is not a finite value "
          f"in image_range {image_range}; {int(bad.sum())} such pixel(s) in "
          f"examples {start}..{start + len(x) - 1}")
    out[start:start + len(x)] = np.rint((x - lo) / (hi - lo) * 255.0)
  return out, dtype.name


def _labels(where: str, labels, tasks) -> np.ndarray:
  """float32 [N, T] copy; DataError at the first label that is not valid."""
  labels = np.asarray(labels)
  if labels.dtype.kind not in "biuf":
    raise DataError(f"{where}: labels must be a numeric array [N, "
                    f"{len(tasks)}]; got dtype {labels.dtype}")
  if labels.ndim == 1 and len(tasks) == 1:
    labels = labels[:, None]  # [N] for a single task.
  try:
    task_types.check_labels(tasks, labels, where)
  except ValueError as e:
    raise DataError(str(e)) from None
  values = labels.astype(np.float64)
  for j, t in enumerate(tasks):
    col = values[:, j]
    if t.type != "regression":
      continue  # check_labels: classes are integers or -1 ("?").
    # Finite in float64 but not in the stored float32.
    with np.errstate(over="ignore"):
      bad = np.isfinite(col) & ~np.isfinite(col.astype(np.float32))
    if bad.any():
      i = int(np.flatnonzero(bad)[0])
      raise DataError(
          f"{where}: label value {col[i]:g} at example {i}, task {t.name!r} "
          f"({t.type}) is not a value float32 can hold; {int(bad.sum())} "
          "such label(s) in all")
  out = values.astype(np.float32)
  # One NaN bit pattern: the stored bytes (and the hash) do not depend on
  # how the NaNs were made.
  out[np.isnan(out)] = np.float32(np.nan)
  return np.ascontiguousarray(out)


def _content_hash(stored, tasks, image_range, input_dtypes) -> str:
  """sha256 (hex) of everything that determines the build's records."""
  header = {
      "format": _HASH_FORMAT,
      "builder_version": str(ArraysBuilder.VERSION),
      "tasks": [t.to_json() for t in tasks],
      "image_range": image_range,
      "input_image_dtypes": input_dtypes,
      "splits": {s: {"images": [str(stored[s][0].dtype),
                                list(stored[s][0].shape)],
                     "labels": [str(stored[s][1].dtype),
                                list(stored[s][1].shape)]}
                 for s in SPLITS},
  }
  h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
  for s in SPLITS:
    for array in stored[s]:
      h.update(memoryview(array).cast("B"))
  return h.hexdigest()


def _builder_class(name: str, content: str, image_shape, tasks,
                   sizes) -> type:
  """A new `ArraysBuilder` subclass for one registration."""
  # The build directory: `arrays_` keeps it apart from the built-ins'. Names
  # that sanitise alike share it safely: configs are keyed by content.
  dirname = "arrays_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
  config = procedural.ProceduralConfig(
      name=f"h{content[:16]}", mode="arrays", size=image_shape[0],
      split_sizes=sizes,
      # Content only (no dataset name): equal content shares a directory.
      description=("Arrays registered with mtljax.data.register_arrays; "
                   f"content sha256 {content}."))
  attrs = {
      "__module__": __name__,
      "__doc__": f"Arrays registered as {name!r}.",
      "name": dirname,
      "DATASET": name,
      "CONTENT_HASH": content,
      "IMAGE_SHAPE": image_shape,
      "TASK_NAMES": tuple(t.name for t in tasks),
      "TASKS": tuple(tasks),
      "BUILDER_CONFIGS": [config],
  }
  clsname = "Arrays_" + re.sub(r"\W", "_", name)
  return types.new_class(clsname, (ArraysBuilder,),
                         {"skip_registration": True},
                         lambda ns: ns.update(attrs))

