"""Random access to one split of any dataset: built-in, from arrays, or TFDS.

    source = open_split("mtl_scenes", "train")        # builds it if needed
    len(source)                                        # examples
    images, labels = source.read(np.array([5, 2, 9]))  # uint8, float32 [n, T]

Every dataset, whatever wrote it, is read through this one interface, so the
train feed (`pipeline.py`) streams batches from any of them and evaluation
reads any of them in chunks. `read` returns validated values: images uint8
[n, H, W, C] and labels float32 [n, T] as stored ("?" = -1 for
classification tasks, NaN for regression; see `mtljax.tasks.types`).

The builder-backed source reads the ArrayRecord files through the builder's
TFDS data source (`builder.as_data_source(split)`, which is what
`tfds.data_source` returns: random access, no TensorFlow). The checksums
recorded at build time are checked when a split is opened.
"""

from __future__ import annotations

from typing import Callable, Mapping, Protocol

import numpy as np

from mtljax import registry
from mtljax.data import builders
from mtljax.data.builders import DataError
from mtljax.data.specs import DatasetSpec
from mtljax.tasks import types as task_types

TFDS_PREFIX = "tfds:"


class SplitSource(Protocol):
  """What the pipeline needs of a split."""

  spec: DatasetSpec
  where: str  # What is read (dataset, split, directory), for messages.

  def __len__(self) -> int:
    ...

  def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [n, H, W, C] images, float32 [n, T] labels) of `indices`."""
    ...


def is_tfds(name) -> bool:
  return isinstance(name, str) and name.startswith(TFDS_PREFIX)


def dataset_spec(name: str, split_sizes=None,
                 tfds_options: Mapping | None = None,
                 data_dir=None) -> DatasetSpec:
  """The spec of any dataset; no build, and (except for TFDS) no I/O."""
  if is_tfds(name):
    from mtljax.data import tfds_source  # pylint: disable=g-import-not-at-top
    return tfds_source.dataset_spec(name, tfds_options, data_dir, split_sizes)
  return builders.dataset_spec(name, split_sizes)


def dataset_version(name: str, tfds_options: Mapping | None = None,
                    data_dir=None) -> str:
  """What identifies the data a name stands for: its build config and version.

  For data registered from arrays the config is the hash of the arrays'
  content ("h3f2a.../1.0.0"), so a workdir trained on other arrays under the
  same name is not resumed with these. No I/O, except for "tfds:" names
  (their prepared version).
  """
  if is_tfds(name):
    from mtljax.data import tfds_options as options_lib  # pylint: disable=g-import-not-at-top
    builder = options_lib.get_builder(name, data_dir)
    return f"{options_lib.tfds_name(name).split(':')[0]}/{builder.version}"
  entry = registry.DATASETS.get(builders.canonical_name(name))
  return f"{entry.config}/{entry.builder.VERSION}"


def unreadable(where: str, directory: str, e: Exception) -> DataError:
  return DataError(f"cannot read {where}: {type(e).__name__}: "
                   f"{builders.error_text(e)}. The built dataset is corrupt or "
                   f"incomplete: delete {directory} and it is rebuilt on first "
                   "use")


def check_images(where: str, images, first: int = 0) -> None:
  """Rejects pixel values that are not finite values in [0, 255]."""
  images = np.asarray(images)
  if images.dtype == np.uint8 or images.size == 0:
    return
  bad = (images < 0) | (images > 255)
  if images.dtype.kind in "fc":
    bad |= ~np.isfinite(images)
  if bad.any():
    i = int(np.argwhere(bad)[0][0])
    value = images[i][bad[i]][0]
    raise DataError(f"{where}: pixel value {value} at example {first + i} "
                    "is not a finite value in [0, 255]; rebuild the dataset")


def check_labels(where: str, tasks, labels, first: int = 0,
                 indices=None) -> None:
  """`task_types.check_labels` as a DataError (names task, value, example)."""
  try:
    task_types.check_labels(tasks, labels, where, first, indices)
  except ValueError as e:
    raise DataError(str(e)) from None


class BuilderSource:
  """A split of a dataset that mtljax builds (built-in or from arrays)."""

  def __init__(self, name: str, split: str, data_dir=None, split_sizes=None,
               missing_rate: float = 0.0,
               log: Callable[[str], None] | None = print):
    self.spec = builders.build(name, data_dir, split_sizes, log=log,
                               missing_rate=missing_rate)
    builder = builders.get_builder(name, data_dir, split_sizes, missing_rate)
    self.directory = builder.data_dir
    self.where = f"{self.spec.name} split {split!r} in {builder.data_dir}"
    # Reading can only fail on a damaged build (the code that wrote it is
    # ours): name the directory rather than show array_record's traceback.
    try:
      # First: a file swapped with another split's reads back as valid
      # records.
      builders.verify_split(builder, split, self.where)
      self._source = builder.as_data_source(split)
      self._len = len(self._source)
    except DataError:
      raise
    except Exception as e:  # noqa: BLE001
      raise unreadable(self.where, builder.data_dir, e) from e

  def __len__(self) -> int:
    return self._len

  def read(self, indices) -> tuple[np.ndarray, np.ndarray]:
    """Reads and validates the records at `indices` (any order, repeats ok)."""
    indices = np.asarray(indices, np.int64)
    try:
      records = self._source.__getitems__(indices.tolist())
    except Exception as e:  # noqa: BLE001
      raise unreadable(self.where, self.directory, e) from e
    stored = np.array([r["index"] for r in records])
    if not np.array_equal(stored, indices):
      bad = int(np.flatnonzero(stored != indices)[0])
      raise DataError(f"{self.where}: records are out of order: record "
                      f"{int(indices[bad])} holds example {int(stored[bad])}; "
                      "rebuild the dataset")
    out = []
    for key, shape in (("image", self.spec.image_shape),
                       ("labels", (self.spec.num_tasks,))):
      values = [r[key] for r in records]
      bad = [i for i, v in enumerate(values) if np.shape(v) != tuple(shape)]
      if bad:
        raise DataError(
            f"{self.where}: stored {key!r} of example "
            f"{int(indices[bad[0]])} has shape {np.shape(values[bad[0]])}, "
            f"expected {tuple(shape)} (the model's input and task count)")
      out.append(np.stack(values) if values else np.zeros(
          (0,) + tuple(shape)))
    images, labels = out
    first = int(indices[0]) if len(indices) else 0
    check_images(self.where, images, first)
    # Checked as stored, before any cast: a cast would silently turn a NaN
    # pixel or a label of 0.5 into something valid.
    check_labels(self.where, self.spec.tasks, labels, indices=indices)
    return images.astype(np.uint8), labels.astype(np.float32)


def open_split(name: str, split: str, *, data_dir=None, split_sizes=None,
               missing_rate: float = 0.0, tfds_options: Mapping | None = None,
               log: Callable[[str], None] | None = print) -> SplitSource:
  """Opens one split of any dataset for random access (building it first if
  mtljax builds it and it is not built yet).

  Args:
    name: a registered dataset, or "tfds:<name>" for a prepared TFDS dataset.
    split: "train", "validation" or "test".
    data_dir: see `builders.resolve_data_dir`.
    split_sizes: which build of a built-in dataset to read.
    missing_rate: which build to read (see `builders.build`).
    tfds_options: for "tfds:" names, the `config.data.tfds` block.
    log: receives the "building ..." lines.

  Raises:
    DataError: unknown dataset or split, or unreadable or invalid data.
  """
  if split not in builders.SPLITS:
    raise DataError(f"unknown split {split!r}; valid splits: "
                    f"{builders.SPLITS}")
  if is_tfds(name):
    from mtljax.data import tfds_source  # pylint: disable=g-import-not-at-top
    return tfds_source.open_split(name, split, tfds_options, data_dir,
                                  split_sizes)
  return BuilderSource(name, split, data_dir, split_sizes, missing_rate, log)
