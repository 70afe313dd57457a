"""Any prepared TFDS dataset as an mtljax dataset: `data.name = "tfds:<name>"`.

    config.data.name = "tfds:celeb_a"             # or "tfds:celeb_a:2.1.0"
    config.data.tfds = {"tasks": {"attributes/*": "binary"},
                        "resize": (64, 64)}
    source = open_split("tfds:celeb_a", "train", config.data.tfds, data_dir)
    images, labels = source.read(np.array([5, 2, 9]))  # uint8, float32 [n, T]

The dataset is read through TFDS's random-access data source
(`builder.as_data_source(split)`, what `tfds.data_source` returns: ArrayRecord
files, no TensorFlow). mtljax never downloads or prepares a TFDS dataset: the
user prepares it once, on a machine with internet access,

    pip install tensorflow tensorflow-datasets
    tfds build celeb_a --file_format=array_record --data_dir DIR

and points `config.data.data_dir` (or $TFDS_DATA_DIR) at DIR. A dataset that
is not prepared there raises one DataError saying exactly that.

Everything after "tfds:" is handed to `tfds.builder`, so the usual TFDS name
forms work: "celeb_a", "celeb_a:2.1.0" (a version), "mnist/config:1.0.0" (a
builder config), and datasets known only from their files in the data dir.

Options (`config.data.tfds`; `DEFAULT_OPTIONS`):

  tasks: {feature-path pattern: task}, required. Feature paths are the
      "/"-joined keys of the (nested) features dict, e.g. "attributes/Smiling"
      or "label". A pattern is matched segment by segment with shell globs
      (`fnmatch`: `*`, `?`, `[...]`; a `*` never crosses a "/"), so
      "attributes/*" is celeb_a's 40 boolean attributes. A task is a type
      name, "binary", "multiclass" or "regression"; "multiclass:K" (an
      integer feature with K classes) or "regression:huber[:DELTA]" (also
      "regression:l1"); or a mapping {"type": ..., "num_classes": K,
      "loss": "huber", "delta": 1.0} (the `mtljax.tasks.Task` fields). Also
      accepted: (pattern, task) pairs (what `config.data.tfds.tasks` holds,
      with task strings) and, from Python, a string
      "attributes/*=binary,label=multiclass".
      Task names are the feature paths; label columns are in SORTED feature
      path order (whatever the order of the patterns). A pattern that
      matches nothing, a feature matched by two patterns, and a type that
      does not fit its feature are errors naming the pattern or feature:
        binary:      a bool, an integer, a float or a 2-class ClassLabel
                     feature; values 0/1 (anything else is an error: a
                     feature coded -1/+1 is rejected, not read as "?").
        multiclass:  a ClassLabel (K = its num_classes), or an integer
                     feature with "num_classes" given; the class index.
        regression:  an integer or float feature; the value (NaN: "?").
      Only scalar features can be tasks.
  image: the image feature's path; default "image". An `Image` feature, or
      a uint8 `Tensor` of rank 3 (or rank 2: one channel).
  resize: () (default) to keep the stored size, or (H, W) (an int n means
      (n, n)). Resizing is PIL's bilinear filter, antialiased when shrinking
      (like `jax.image.resize(..., "linear", antialias=True)`, which it
      matches to within 1), deterministic. Needed for datasets whose images
      vary in size.
  splits: {our split: TFDS split}; merged into the default identity map
      {"train": "train", "validation": "validation", "test": "test"}; a
      mapping or (our split, TFDS split) pairs. Values are TFDS split
      strings, slicing included: e.g. for a dataset without a validation
      split, {"train": "train[:90%]", "validation": "train[90%:]"}.

Split sizes are the dataset's own (the data source lengths of the mapped
splits): `data.split_sizes` must be () for a TFDS dataset; take subsets with
`splits` ("train[:10000]") or `data.train_examples` / `data.eval_examples`.

Labels: one float32 column per task ("?" = -1 for classification, NaN for
regression, see `mtljax.tasks.types`); booleans become 0/1, ClassLabels their
index, numbers their value. Every batch is validated (`types.check_labels`):
a bad value raises one DataError naming the task, the value and the example.
`read_labels(indices)` gives the same labels without decoding any `Image`
feature (for scanning a split's labels: celeb_a's JPEG decoding dominates
`read`).

Testing without data: `tfds.testing.mock_data(policy=MockPolicy.USE_CODE)`
serves catalog datasets (features from the TFDS code, no metadata files, no
TensorFlow): every split then has `num_examples` records, and record i is a
pure function of i (the same in every split and call). An unprepared builder
is accepted when its data source opens, which is how the mock gets through.
See tests/test_tfds_source.py (also for the mock's `__getitems__` bug in
tensorflow-datasets 4.9.10).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow_datasets as tfds

from mtljax.data import builders
from mtljax.data import sources
from mtljax.data.builders import DataError
from mtljax.data.specs import DatasetSpec

PREFIX = sources.TFDS_PREFIX
SPLITS = tuple(builders.SPLITS)

from mtljax.data import tfds_options as options_lib
from mtljax.data.tfds_options import DEFAULT_OPTIONS  # noqa: F401 (public)
from mtljax.data.tfds_options import get_builder
from mtljax.data.tfds_options import image_feature_shape
from mtljax.data.tfds_options import parse_options
from mtljax.data.tfds_options import prepare_instructions  # noqa: F401
from mtljax.data.tfds_options import resolve_tasks
from mtljax.data.tfds_options import tfds_name


def _check_split_sizes(split_sizes) -> None:
  if split_sizes is None:
    return
  if isinstance(split_sizes, Mapping) or hasattr(split_sizes, "to_dict"):
    empty = not options_lib._as_dict(split_sizes, "split_sizes")
  else:
    try:
      empty = len(split_sizes) == 0
    except TypeError:
      empty = False
  if not empty:
    raise DataError(
        f"data.split_sizes {split_sizes!r} is for the datasets mtljax builds; "
        "a TFDS dataset's split sizes are its own: leave split_sizes = () and "
        "take subsets with data.tfds.splits (e.g. {'train': 'train[:10000]'}) "
        "or data.train_examples / data.eval_examples")


def _open_source(builder, short: str, data_dir: str, ours: str, theirs: str):
  """The TFDS data source of split `theirs` (our split `ours`)."""
  splits = builder.info.splits
  # A prepared dataset's info knows its splits: check the split string
  # (slices included) first, for a message naming the splits there are.
  if len(splits):
    try:
      splits[theirs]  # pylint: disable=pointless-statement
    except Exception as e:  # noqa: BLE001
      raise DataError(
          f"TFDS dataset {short!r} has no split {theirs!r} for our "
          f"{ours!r} split ({builders.error_text(e)}); its splits: "
          f"{sorted(splits.keys())}. Map it with data.tfds.splits, e.g. "
          "{'train': 'train[:90%]', 'validation': 'train[90%:]'}") from None
  try:
    source = builder.as_data_source(theirs)
    len(source)
    return source
  except Exception as e:  # noqa: BLE001
    # An unprepared builder fails here with a misleading file-format
    # message; name the real cause. (Checked after trying, not before:
    # `tfds.testing.mock_data` serves data for unprepared builders.)
    if not builder.is_prepared():
      raise options_lib._not_prepared(short, data_dir, builder) from None
    raise DataError(
        f"cannot open split {theirs!r} of TFDS dataset {short!r} in "
        f"'{builder.data_dir}': {type(e).__name__}: {builders.error_text(e)}. "
        "mtljax needs random access: prepare it as ArrayRecord, e.g. "
        f"`tfds build {short} --file_format=array_record --data_dir "
        f"{data_dir}`") from None


class _Dataset:
  """A builder, its parsed options, tasks and split sources."""

  def __init__(self, name: str, tfds_options, data_dir, split_sizes):
    _check_split_sizes(split_sizes)
    self.name = name
    self.short = tfds_name(name)
    self.data_dir = builders.resolve_data_dir(data_dir)
    self.options = parse_options(tfds_options)
    self.builder = get_builder(name, self.data_dir)
    self.sources = {s: _open_source(self.builder, self.short, self.data_dir,
                                    s, t)
                    for s, t in self.options.splits.items()}
    features = self.builder.info.features
    self.stored_shape, image_shape = image_feature_shape(
        self.short, features, self.options)
    self.tasks = resolve_tasks(self.short, features, self.options)
    self.spec = DatasetSpec(
        name=name, task_names=tuple(t.name for t in self.tasks),
        image_shape=image_shape,
        split_sizes={s: len(src) for s, src in self.sources.items()},
        tasks=self.tasks)

  def labels_source(self, split: str):
    """A data source of `split` that leaves every `Image` feature encoded
    (`tfds.decode.SkipDecoding`): reading labels decodes no image.

    The plain source where there is no Image feature, or where the builder
    is not prepared (only under `tfds.testing.mock_data`, whose generator
    cannot skip decoding without TensorFlow).
    """
    decoders = {}
    for f in options_lib._flat_features(self.builder.info.features):
      if isinstance(f.feature, tfds.features.Image):
        *parents, leaf = f.path.split("/")
        node = decoders
        for key in parents:
          node = node.setdefault(key, {})
        node[leaf] = tfds.decode.SkipDecoding()
    if not decoders or not self.builder.is_prepared():
      return self.sources[split]
    return self.builder.as_data_source(self.options.splits[split],
                                       decoders=decoders)


def dataset_spec(name: str, tfds_options=None, data_dir=None,
                 split_sizes=None) -> DatasetSpec:
  """The spec of prepared TFDS dataset `name` ("tfds:..."); reads metadata.

  Raises:
    DataError: bad options, a dataset not prepared in the data dir, unknown
      splits, or tasks that do not fit the features.
  """
  return _Dataset(name, tfds_options, data_dir, split_sizes).spec


def open_split(name: str, split: str, tfds_options=None, data_dir=None,
               split_sizes=None) -> "TfdsSource":
  """One split of prepared TFDS dataset `name`, as a `sources.SplitSource`."""
  if split not in SPLITS:
    raise DataError(f"unknown split {split!r}; valid splits: {list(SPLITS)}")
  return TfdsSource(_Dataset(name, tfds_options, data_dir, split_sizes),
                    split)


# ---------------------------------------------------------------------------
# Reading.


def resize_image(image: np.ndarray, size) -> np.ndarray:
  """uint8 [h, w, c] -> uint8 [H, W, c]: PIL's bilinear filter.

  PIL widens the (triangle) filter by the scale factor when shrinking, so
  this is antialiased like `jax.image.resize(x, ..., "linear",
  antialias=True)` (within 1 of its rounded output), and deterministic. It
  runs in C, one image at a time: on celeb_a (218x178 -> 64x64) about 5x
  faster than a batched numpy version (two dense matrix products). Pillow
  is always there (a dependency of matplotlib, and what TFDS decodes
  images with when OpenCV is absent).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  height, width = size
  if image.shape[:2] == (height, width):
    return image
  def one(plane):
    return np.asarray(Image.fromarray(np.ascontiguousarray(plane)).resize(
        (width, height), Image.Resampling.BILINEAR))
  if image.shape[2] == 3:
    return one(image)
  return np.stack([one(image[:, :, k]) for k in range(image.shape[2])],
                  axis=-1)


def resize_images(images: np.ndarray, size) -> np.ndarray:
  """uint8 [n, h, w, c] -> uint8 [n, H, W, c] (`resize_image` of each)."""
  out = np.empty((len(images),) + tuple(size) + (images.shape[3],), np.uint8)
  for i, image in enumerate(images):
    out[i] = resize_image(image, size)
  return out


def _get(record, path: str):
  for key in path.split("/"):
    record = record[key]
  return record


class TfdsSource:
  """One split of a prepared TFDS dataset (`sources.SplitSource`)."""

  def __init__(self, dataset: _Dataset, split: str):
    self._dataset = dataset
    self.spec = dataset.spec
    self.split = split
    self.tfds_split = dataset.options.splits[split]
    self._source = dataset.sources[split]
    self._len = len(self._source)
    self._labels_source = None
    self.where = (f"TFDS {dataset.short} split {split!r} "
                  f"({self.tfds_split!r}) in {dataset.data_dir}")

  def __len__(self) -> int:
    return self._len

  def read(self, indices) -> tuple[np.ndarray, np.ndarray]:
    """Reads, resizes and validates the records at `indices` (one batched
    `__getitems__`; any order, repeats ok)."""
    indices = self._indices(indices)
    records = self._records(self._source, indices)
    return self._images(records, indices), self._labels(records, indices)

  def read_labels(self, indices) -> np.ndarray:
    """float32 [n, T]: the validated labels of `indices`, as `read` gives
    them, without decoding (or resizing) any image: for label scans."""
    indices = self._indices(indices)
    if self._labels_source is None:
      self._labels_source = self._dataset.labels_source(self.split)
    return self._labels(self._records(self._labels_source, indices), indices)

  def _indices(self, indices) -> np.ndarray:
    indices = np.asarray(indices, np.int64).reshape(-1)
    if len(indices) and (indices.min() < 0 or indices.max() >= self._len):
      bad = int(indices[(indices < 0) | (indices >= self._len)][0])
      raise IndexError(f"{self.where}: index {bad} out of range "
                       f"[0, {self._len})")
    return indices

  def _records(self, source, indices) -> list:
    if not len(indices):
      return []
    try:
      return source.__getitems__(indices.tolist())
    except Exception as e:  # noqa: BLE001
      raise DataError(
          f"cannot read {self.where}: {type(e).__name__}: "
          f"{builders.error_text(e)}. The prepared files are damaged or "
          f"incomplete: prepare the dataset again (tfds build "
          f"{self._dataset.short} --file_format=array_record)") from e

  def _images(self, records, indices) -> np.ndarray:
    opts, shape = self._dataset.options, self.spec.image_shape
    images = []
    for i, r in enumerate(records):
      image = np.asarray(_get(r, opts.image))
      if image.ndim == 2:
        image = image[..., None]
      if (image.ndim != 3 or image.shape[2] != shape[2]
          or image.dtype != np.uint8
          or (not opts.resize and image.shape != shape)):
        raise DataError(f"{self.where}: image of example {int(indices[i])} "
                        f"is {image.dtype} {image.shape}, expected uint8 "
                        f"{'[H, W, %d]' % shape[2] if opts.resize else shape}")
      images.append(image)
    if not images:
      return np.zeros((0,) + shape, np.uint8)
    if opts.resize:
      images = [resize_image(image, opts.resize) for image in images]
    return np.stack(images)

  def _labels(self, records, indices) -> np.ndarray:
    tasks = self.spec.tasks
    labels = np.empty((len(records), len(tasks)), np.float64)
    for j, t in enumerate(tasks):
      values = [_get(r, t.name) for r in records]
      column = np.asarray(values) if values else np.zeros((0,))
      if column.shape != (len(records),) or column.dtype.kind not in "biuf":
        for i, v in enumerate(values):
          v = np.asarray(v)
          if v.shape != () or v.dtype.kind not in "biuf":
            raise DataError(f"{self.where}: feature {t.name!r} of example "
                            f"{int(indices[i])} is {v.dtype} {v.shape}, not "
                            "a number")
        column = np.array([np.asarray(v, np.float64) for v in values])
      if t.type == "binary" and np.any(column == -1):
        # mtljax reads -1 as "?", but a TFDS feature coded -1/+1 is far more
        # likely than one with missing values: refuse rather than mask.
        i = int(np.flatnonzero(column == -1)[0])
        raise DataError(
            f"{self.where}: feature {t.name!r} of example {int(indices[i])} "
            "is -1; a binary task from a TFDS feature needs 0/1 (a feature "
            "coded -1/+1 would be read as '?'/1)")
      labels[:, j] = column
    sources.check_labels(self.where, tasks, labels, indices=indices)
    return labels.astype(np.float32)
