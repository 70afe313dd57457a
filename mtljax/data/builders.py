"""TFDS builders (ArrayRecord) for the procedural datasets, and build-on-use.

Datasets (`DATASET_NAMES`), all generated locally, no download:

  * `mtl_scenes` (config `default`): 32x32x3 street scenes, 4 related tasks
    (pedestrian, car, stop_sign, traffic_light), see `scenes.py`.
  * `mtl_scenes/large`: the same scenes at 64x64.
  * `mtl_scenes/unrelated`: the control, 32x32, four tasks with disjoint cues.
  * `digits_multilabel`: 24x24x1 canvases of 1-3 real handwritten digits, 10
    presence tasks, see `digits.py`.

Each is a real `tfds.core.GeneratorBasedBuilder` writing ArrayRecord files
(random access without TensorFlow) with features `image` (uint8 [H, W, C]),
`labels` (int8 [T], -1 = missing) and `index` (int64, the example's position;
shuffling is disabled so record i is example i).

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
import hashlib
import inspect
import io
import json
import logging
import os
import re
import tempfile
import time
from typing import Callable, Mapping, Sequence

from absl import logging as absl_logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from mtljax import errors
from mtljax.data import digits
from mtljax.data import scenes


DataError = errors.DataError


DATASET_NAMES = ("mtl_scenes", "mtl_scenes/large", "mtl_scenes/unrelated",
                 "digits_multilabel")
SPLITS = ("train", "validation", "test")
# The seed of the stored data (not of a run): every build is the same dataset.
DATA_SEED = 0
_SALT_MISSING = 0x6D69_7373  # "miss": keeps the missing-label draws apart.
# In each build directory: {split: {"sha256", "num_examples", "files"}}.
CHECKSUMS_FILENAME = "mtljax_checksums.json"
_HASH_BLOCK = 1 << 20

# Not `log`: `build` takes a `log` callable.
_logger = logging.getLogger("mtljax")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a dataset looks like, known without building it.

  Attributes:
    name: canonical dataset name, one of `DATASET_NAMES`.
    task_names: the tasks, in label-column order.
    image_shape: (H, W, C) of the uint8 images.
    split_sizes: {"train": n, "validation": n, "test": n}.
  """

  name: str
  task_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  split_sizes: dict[str, int]

  @property
  def num_tasks(self) -> int:
    return len(self.task_names)


# name -> (builder family, base config, task names, image shape, default sizes)
_CATALOG = {
    "mtl_scenes": ("mtl_scenes", "default", scenes.TASK_NAMES, (32, 32, 3),
                   (50000, 5000, 10000)),
    "mtl_scenes/large": ("mtl_scenes", "large", scenes.TASK_NAMES, (64, 64, 3),
                         (50000, 5000, 10000)),
    "mtl_scenes/unrelated": ("mtl_scenes", "unrelated", scenes.TASK_NAMES,
                             (32, 32, 3), (50000, 5000, 10000)),
    "digits_multilabel": ("digits_multilabel", "default", digits.TASK_NAMES,
                          digits.IMAGE_SHAPE, (20000, 4000, 4000)),
}
_ALIASES = {"mtl_scenes/default": "mtl_scenes",
            "digits_multilabel/default": "digits_multilabel"}


def canonical_name(name: str) -> str:
  """Maps a dataset name (or alias such as "mtl_scenes/default") to canonical.

  Raises:
    DataError: the name is not a known dataset.
  """
  name = _ALIASES.get(name, name) if isinstance(name, str) else name
  if name not in _CATALOG:
    raise DataError(f"unknown dataset {name!r}; valid datasets: "
                    f"{', '.join(DATASET_NAMES)}")
  return name


def _split_sizes(name: str, split_sizes) -> tuple[int, int, int]:
  """Normalises None / a {split: n} mapping / a 3-sequence to (tr, va, te)."""
  default = _CATALOG[name][4]
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
  return tuple(int(n) for n in sizes)


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
  _, _, tasks, shape, _ = _CATALOG[name]
  sizes = _split_sizes(name, split_sizes)
  return DatasetSpec(name=name, task_names=tuple(tasks),
                     image_shape=tuple(shape),
                     split_sizes=dict(zip(SPLITS, sizes)))


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


_GPATH_REPR = re.compile(r"\b\w*GPath\((['\"])(.*?)\1\)")


def error_text(e: BaseException) -> str:
  """The first line of an exception's message (at most 300 characters).

  For quoting a library's error inside ours: TFDS and etils often format paths
  as "PosixGPath('...')", which is rewritten to the plain path.
  """
  text = _GPATH_REPR.sub(r"\2", str(e).strip())
  return (text.splitlines() or [""])[0][:300].rstrip(".")


# --------------------------------------------------------------- builders.


@dataclasses.dataclass(eq=False)
class ProceduralConfig(tfds.core.BuilderConfig):
  """Builder config: which generator, split sizes and missing-label rate."""

  mode: str = "shared"
  size: int = 32
  split_sizes: tuple[int, int, int] = (50000, 5000, 10000)
  missing_rate: float = 0.0


class _ProceduralBuilder(tfds.core.GeneratorBasedBuilder,
                         skip_registration=True):
  """Shared writer: chunked generation, optional missing labels, ArrayRecord."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": "mtl_scenes: pedestrians (and the people-like distractors) "
               "drawn ~2.2x larger; at 1.0.0 the pedestrian task was near "
               "chance even with the whole training split.",
  }
  TASK_NAMES: tuple[str, ...] = ()
  CHUNK_SIZE = 1000  # The generator's chunk size (for prefix stability).

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's default locates the module via `importlib_resources`, an optional
    # dependency of etils that may be missing; the plain file path is enough
    # (it is only used to look for a download checksums file, which we lack).
    return epath.Path(inspect.getfile(cls))

  def _image_shape(self) -> tuple[int, int, int]:
    raise NotImplementedError

  def _chunks(self, split: str, num_examples: int):
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(self.builder_config.description or self.__doc__),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=self._image_shape(),
                                          dtype=np.uint8),
            "labels": tfds.features.Tensor(shape=(len(self.TASK_NAMES),),
                                           dtype=np.int8),
            "index": tfds.features.Scalar(dtype=np.int64),
        }),
        # Record i must be example i: prefix stability and the `index` check
        # on load rely on it, and the training order is shuffled by grain.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(task_names=list(self.TASK_NAMES)),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is generated locally.
    sizes = dict(zip(SPLITS, self.builder_config.split_sizes))
    return {s: self._generate_examples(s, n) for s, n in sizes.items()}

  def _generate_examples(self, split: str, num_examples: int):
    rate = self.builder_config.missing_rate
    index = 0
    for chunk, (images, labels) in enumerate(self._chunks(split,
                                                          num_examples)):
      if rate > 0:
        # Drawn for a full chunk, then truncated: prefix-stable like the data.
        rng = np.random.default_rng(
            [DATA_SEED, SPLITS.index(split), chunk, _SALT_MISSING])
        missing = rng.random((self.CHUNK_SIZE, labels.shape[1])) < rate
        labels = np.where(missing[:len(labels)], -1, labels).astype(np.int8)
      for image, label in zip(images, labels):
        yield index, {"image": image, "labels": label, "index": index}
        index += 1


def _config(name: str, description: str, **kw) -> ProceduralConfig:
  return ProceduralConfig(name=name, description=description, **kw)


class MtlScenes(_ProceduralBuilder):
  """Procedural street scenes with four binary object-presence tasks."""

  TASK_NAMES = scenes.TASK_NAMES
  CHUNK_SIZE = scenes.CHUNK_SIZE
  BUILDER_CONFIGS = [
      _config("default", "32x32 street scenes, related tasks.", mode="shared",
              size=32),
      _config("large", "64x64 street scenes, related tasks.", mode="shared",
              size=64),
      _config("unrelated", "32x32 control: four tasks with disjoint cues.",
              mode="unrelated", size=32),
  ]

  def _image_shape(self):
    return (self.builder_config.size, self.builder_config.size, 3)

  def _chunks(self, split, num_examples):
    params = scenes.SceneParams(size=self.builder_config.size)
    return scenes.generate_split(DATA_SEED, split, num_examples,
                                 self.builder_config.mode, params)


class DigitsMultilabel(_ProceduralBuilder):
  """24x24 canvases of 1-3 sklearn digits; ten digit-presence tasks."""

  TASK_NAMES = digits.TASK_NAMES
  CHUNK_SIZE = digits.CHUNK_SIZE
  BUILDER_CONFIGS = [
      _config("default", "1-3 digits per 24x24 canvas, disjoint source pools.",
              mode="digits", size=digits.CANVAS_SIZE,
              split_sizes=(20000, 4000, 4000)),
  ]

  def _image_shape(self):
    return digits.IMAGE_SHAPE

  def _chunks(self, split, num_examples):
    return digits.generate_split(DATA_SEED, split, num_examples)


_BUILDERS = {"mtl_scenes": MtlScenes, "digits_multilabel": DigitsMultilabel}


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
  family, base, _, _, default = _CATALOG[name]
  sizes = _split_sizes(name, split_sizes)
  rate = _check_missing_rate(missing_rate)
  cls = _BUILDERS[family]
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


# -------------------------------------------------------------- checksums.

# (path, inode, mtime_ns, size) of each file of a split -> sha256 of their
# bytes: reading the same unchanged split again in this process needs no
# rehash (a swap or rewrite changes the inode or the mtime).
_DIGESTS: dict[tuple, str] = {}


def _split_files(builder: tfds.core.DatasetBuilder, split: str) -> list[str]:
  """The split's shard file names, in shard order (from dataset_info.json)."""
  return list(builder.info.splits[split].filenames)


def _digest(directory: str, files: Sequence[str]) -> str:
  """sha256 over the bytes of `files` (in `directory`), in order; cached.

  Raises:
    OSError: a file is missing or unreadable.
  """
  paths = [os.path.join(directory, f) for f in files]
  key = tuple((p, st.st_ino, st.st_mtime_ns, st.st_size)
              for p, st in ((p, os.stat(p)) for p in paths))
  digest = _DIGESTS.get(key)
  if digest is None:
    h = hashlib.sha256()
    for path in paths:
      with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
          h.update(block)
    digest = _DIGESTS[key] = h.hexdigest()
  return digest


def _split_record(builder: tfds.core.DatasetBuilder, split: str) -> dict:
  files = _split_files(builder, split)
  return {"sha256": _digest(os.fspath(builder.data_dir), files),
          "num_examples": int(builder.info.splits[split].num_examples),
          "files": files}


def write_checksums(builder: tfds.core.DatasetBuilder) -> dict:
  """Records the checksum of every split of a finished build; returns them.

  Writes `<builder.data_dir>/mtljax_checksums.json` = {split: {"sha256",
  "num_examples", "files"}}, atomically (a temporary file, then
  `os.replace`): a reader never sees half a file.

  Raises:
    OSError: a split file is unreadable, or the directory is not writable.
  """
  directory = os.fspath(builder.data_dir)
  record = {s: _split_record(builder, s) for s in SPLITS}
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{CHECKSUMS_FILENAME}.",
                             suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(record, f, indent=1, sort_keys=True)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, os.path.join(directory, CHECKSUMS_FILENAME))
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
  return record


def verify_split(builder: tfds.core.DatasetBuilder, split: str,
                 where: str) -> None:
  """Checks a split's files against the checksum recorded when it was built.

  The checksum is a sha256 over the split's shard files, in shard order, so a
  damaged file, or the files of two splits swapped (same names, same number
  of records, other content), is caught. Unchanged files are hashed once per
  process (see `_DIGESTS`).

  Trust on first use: a build made before checksums were recorded has no
  checksum file. Its checksums are then computed from the files as they are
  and written (when the directory is writable), and later reads are checked
  against them; this first read is not checked.

  Args:
    builder: the builder of a prepared (built) dataset.
    split: one of `SPLITS`.
    where: what is being read (dataset, split, directory), for the message.

  Raises:
    DataError: the files differ from the recorded checksum, or the checksum
      file is unreadable.
    OSError: a file of the split is missing or unreadable.
  """
  directory = os.fspath(builder.data_dir)
  path = os.path.join(directory, CHECKSUMS_FILENAME)
  fix = (f"the build is corrupt or incomplete, or its files were changed: "
         f"delete {directory} and it is rebuilt on first use")
  try:
    with open(path, encoding="utf-8") as f:
      recorded = json.load(f)
  except FileNotFoundError:
    recorded = None
  except (OSError, ValueError) as e:
    raise DataError(f"{where}: cannot read its checksums, {path}: "
                    f"{type(e).__name__}: {error_text(e)}; {fix}") from e
  if recorded is None:
    _split_record(builder, split)  # This split's files must at least exist.
    try:
      write_checksums(builder)
    except OSError as e:  # E.g. a read-only data dir: still usable.
      _logger.warning("could not record the checksums of %s: %s", directory,
                      error_text(e))
    return
  entry = recorded.get(split) if isinstance(recorded, dict) else None
  if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)):
    raise DataError(f"{where}: {path} holds no checksum for split "
                    f"{split!r}; {fix}")
  files = _split_files(builder, split)
  num_examples = int(builder.info.splits[split].num_examples)
  if entry.get("files") != files or entry.get("num_examples") != num_examples:
    raise DataError(f"{where}: dataset_info.json lists {num_examples} "
                    f"examples in {', '.join(files)}, but it was built with "
                    f"{entry.get('num_examples')} in "
                    f"{', '.join(map(str, entry.get('files') or ()))}; {fix}")
  digest = _digest(directory, files)
  if digest != entry["sha256"]:
    raise DataError(f"{where}: the sha256 of {', '.join(files)} does not "
                    f"match the checksum recorded at build time in "
                    f"{CHECKSUMS_FILENAME} (e.g. a damaged file, or the "
                    f"files of two splits swapped); {fix}")


def list_datasets() -> Sequence[DatasetSpec]:
  """Specs of all datasets at their default sizes (for `mtljax data list`)."""
  return [dataset_spec(n) for n in DATASET_NAMES]
