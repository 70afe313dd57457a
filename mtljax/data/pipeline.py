"""Reading the datasets: the grain train feed, evaluation splits, numpy splits.

Access path. Every split of every dataset (built-in, registered from arrays,
or a prepared TFDS dataset) is a random-access `sources.SplitSource`: for our
builds, the builder's TFDS data source (`builder.as_data_source(split)`, what
`tfds.data_source` returns: ArrayRecord random access, no TensorFlow).

No whole split in RAM unless it is small. The labels of the training split
are read once (they are small: [N, T] float32) and the images are either
  * held in memory as uint8, when they take at most `IN_MEMORY_BYTES` (the
    built-in datasets: `mtl_scenes` is 150 MB), so a batch is one numpy
    gather shared by every seed; or
  * streamed: each step reads just its batch's records from the files, in
    grain's prefetch thread. (celeb_a at 64x64 is 2 GB of uint8, and would
    be 8 GB as float32.)
`data.in_memory` ("auto", "always", "never") overrides the choice. Both give
exactly the same batches. Evaluation splits are read in chunks and
normalised per chunk (`EvalSplit`), never held as float32.

Training order. For each seed s, grain's
`MapDataset.range(N).shuffle(seed=g(s)).batch(B, drop_remainder=True)
.repeat()` gives the example indices of each global batch: a fresh
permutation per epoch, the last partial batch of each epoch dropped. grain's
shuffle is a pure function of (seed, epoch, position), so `batch(step)` is a
pure function of (seed, step) and a run resumed at step k sees exactly the
batches of an uninterrupted run. `g(s)` hashes the seed because grain seeds
epoch e with seed + e: raw seeds 0 and 1 would share all but one epoch order.

Labels. Seed s trains on `apply_typed_label_controls(stored_train_labels,
seed=s, ...)` (see `labels.py`), a per-seed property of the pipeline: the MTL
and STL arms of one seed, fed by the same pipeline, see the same labels and
masks. Labels are float32 (0/1, class index or value); "?" is masked.

Images are normalised by `normalize` (x / 255 - 0.5), in training and eval.
"""

from __future__ import annotations

import sys
from typing import Callable, Iterator, Sequence

import grain
import numpy as np

from mtljax.data import arguments
from mtljax.data import builders
from mtljax.data import labels as labels_lib
from mtljax.data import sources
from mtljax.data.builders import DataError
from mtljax.tasks import types as task_types

_READ_CHUNK = 4096  # records per read when a whole split is scanned.
_SALT_ORDER = 0x6F72_6465  # "orde": seeds the grain shuffle from the run seed.
# Training images up to this size are held in memory ("auto").
IN_MEMORY_BYTES = 1 << 30
IN_MEMORY = ("auto", "always", "never")


def normalize(images: np.ndarray) -> np.ndarray:
  """uint8 images -> float32 in [-0.5, 0.5] (x / 255 - 0.5).

  A fixed affine map rather than per-channel dataset statistics: it needs no
  pass over the data, is identical for every dataset, seed and label subset,
  and keeps inputs centred well enough for the small encoders used here.
  """
  return np.asarray(images, np.float32) * np.float32(1.0 / 255.0) - np.float32(
      0.5)


def check_examples(where: str, task_names: Sequence[str], first: int = 0, *,
                   images: np.ndarray | None = None,
                   labels: np.ndarray | None = None, tasks=None) -> None:
  """Rejects stored values that a model must never see, naming the first.

  Args:
    where: what is being read (dataset, split, directory), for the message.
    task_names: the label columns' names (all binary unless `tasks`).
    first: index of the first example in `images`/`labels`.
    images: [n, H, W, C] pixel values: finite and in [0, 255].
    labels: [n, T] label values, valid for each task's type or "?".
    tasks: the Tasks (default: a binary task per name).

  Raises:
    DataError: the first bad value, with its example index (and task).
  """
  if images is not None:
    sources.check_images(where, images, first)
  if labels is not None:
    tasks = tasks or tuple(task_types.Task(n) for n in task_names)
    sources.check_labels(where, tasks, labels, first)


def _open(name, split, data_dir, split_sizes, missing_rate, tfds_options,
          log) -> sources.SplitSource:
  return sources.open_split(name, split, data_dir=data_dir,
                            split_sizes=split_sizes, missing_rate=missing_rate,
                            tfds_options=tfds_options, log=log)


def _scan(source: sources.SplitSource, n: int, images: bool):
  """Reads the first n examples in chunks: (uint8 images or None, labels)."""
  spec = source.spec
  out_images = np.empty((n,) + tuple(spec.image_shape), np.uint8) if (
      images) else None
  out_labels = np.empty((n, spec.num_tasks), np.float32)
  # A source that can read labels without decoding images (TFDS: no JPEG
  # decode and resize of a whole split just to learn its labels) does so.
  read_labels = None if images else getattr(source, "read_labels", None)
  for start in range(0, n, _READ_CHUNK):
    stop = min(n, start + _READ_CHUNK)
    if read_labels is not None:
      out_labels[start:stop] = read_labels(np.arange(start, stop))
      continue
    x, y = source.read(np.arange(start, stop))
    if images:
      out_images[start:stop] = x
    out_labels[start:stop] = y
  return out_images, out_labels


def load_split(name: str, split: str, data_dir=None, split_sizes=None,
               num_examples: int | None = None, *,
               missing_rate: float = 0.0, tfds_options=None,
               log: Callable[[str], None] | None = print) -> dict:
  """Reads (the first `num_examples` of) a split into numpy arrays.

  Builds the dataset first if mtljax builds it and it is not built yet, and
  checks the split's files against the checksum recorded at build time.

  Args:
    name: a registered dataset, or "tfds:<name>".
    split: "train", "validation" or "test".
    data_dir: see `resolve_data_dir`.
    split_sizes: which build to read: None (defaults), {split: n} or 3 ints.
    num_examples: read only the first n examples (None or -1: all).
    missing_rate: which build to read (see `builders.build`).
    tfds_options: for "tfds:" names, the `config.data.tfds` block.
    log: receives the "building ..." line if a build happens.

  Returns:
    {"image": uint8 [N, H, W, C], "labels": [N, T]}: labels as stored, int8
    in {-1, 0, 1} for a dataset of binary tasks, else float32 (class index
    or value; "?" = -1 for classification, NaN for regression).

  Raises:
    DataError: bad arguments, or stored data that cannot be read (corrupt or
      missing files), differs from its recorded checksum, has the wrong
      shapes, invalid labels, bad pixels, or records out of order.
  """
  source = _open(name, split, data_dir, split_sizes, missing_rate,
                 tfds_options, log)
  n = arguments.count(num_examples, "num_examples", len(source),
                      source.spec.name, split)
  images, labels = _scan(source, n, images=True)
  if all(t.type == "binary" for t in source.spec.tasks):
    labels = np.where(np.isnan(labels), -1, labels).astype(np.int8)
  return {"image": images, "labels": labels}


class EvalSplit:
  """A validation or test split for evaluation, read in chunks.

  Attributes:
    spec: the dataset's spec.
    labels: float32 [N, T] (0/1, class index or value; 0 where "?").
    mask: bool [N, T], the observed labels.
  """

  def __init__(self, source: sources.SplitSource, n: int, in_memory: str):
    self.spec = source.spec
    keep = _keep_in_memory(in_memory, n, self.spec.image_shape)
    self._images, stored = _scan(source, n, images=keep)
    self._source = None if keep else source
    self.mask = task_types.observed(self.spec.tasks, stored)
    with np.errstate(invalid="ignore"):
      self.labels = np.where(self.mask, stored, 0).astype(np.float32)

  def __len__(self) -> int:
    return len(self.labels)

  def images(self, start: int, stop: int) -> np.ndarray:
    """Normalised float32 images [stop - start, H, W, C]."""
    if self._source is None:
      return normalize(self._images[start:stop])
    return normalize(self._source.read(np.arange(start, stop))[0])

  def all_images(self) -> np.ndarray:
    return self.images(0, len(self))


def eval_split(name: str, split: str, data_dir=None, split_sizes=None,
               num_examples: int | None = None, *, missing_rate: float = 0.0,
               tfds_options=None, in_memory: str = "auto",
               log: Callable[[str], None] | None = print) -> EvalSplit:
  """A validation/test split, ready for evaluation (see `EvalSplit`).

  Evaluation splits get no label controls: every stored label counts (only
  "?" labels are masked out).

  Args:
    name, split, data_dir, split_sizes, missing_rate, tfds_options, log: as
      in `load_split`.
    num_examples: a cap: the first min(num_examples, split size) examples
      (None or -1: all), so one experiment config can cap evaluation on
      datasets whose evaluation splits differ in size.
    in_memory: keep the uint8 images in memory ("auto": when small).
  """
  # Validated against "no limit" first, so a too-large cap is not an error.
  cap = arguments.count(num_examples, "num_examples", sys.maxsize, name, split)
  source = _open(name, split, data_dir, split_sizes, missing_rate,
                 tfds_options, log)
  return EvalSplit(source, min(cap, len(source)), in_memory)


def eval_arrays(name: str, split: str, data_dir=None, split_sizes=None,
                num_examples: int | None = None, *,
                missing_rate: float = 0.0, tfds_options=None,
                log: Callable[[str], None] | None = print):
  """A whole evaluation split as arrays (for small datasets and notebooks).

  Returns:
    (images float32 [N, H, W, C] (normalised), labels [N, T] (int8 in {0, 1}
    for binary datasets, else float32; 0 where "?"), mask bool [N, T]).
  """
  ev = eval_split(name, split, data_dir, split_sizes, num_examples,
                  missing_rate=missing_rate, tfds_options=tfds_options,
                  in_memory="always", log=log)
  labels = ev.labels
  if all(t.type == "binary" for t in ev.spec.tasks):
    labels = labels.astype(np.int8)
  return ev.all_images(), labels, ev.mask


def _keep_in_memory(in_memory: str, n: int, image_shape) -> bool:
  if in_memory not in IN_MEMORY:
    raise DataError(f"in_memory must be one of {IN_MEMORY}; got "
                    f"{in_memory!r}")
  size = n * int(np.prod(image_shape))
  return in_memory == "always" or (in_memory == "auto"
                                   and size <= IN_MEMORY_BYTES)


class TrainPipeline:
  """Training batches for several seeds at once, a pure function of the step.

  Each batch is {"image": float32 [S, B, H, W, C], "labels": float32
  [S, B, T] (0/1, class index or value; 0 where not kept), "mask": bool
  [S, B, T]} with S = len(seeds) and B the local batch size (global batch /
  process_count; process p gets the p-th contiguous slice of every global
  batch).

  Attributes:
    spec: the dataset's `DatasetSpec`.
    seeds: the seeds, one per leading-axis row of a batch.
    task_names, num_tasks, image_shape, tasks: as in the spec.
    num_train: training examples used (the first `train_examples`).
    global_batch_size, local_batch_size: examples per step, all / this host.
    steps_per_epoch: num_train // global_batch_size.
    labels, masks: float32 / bool [S, num_train, T]: each seed's training
      labels (unkept ones set to 0) and which of them are kept.
    streaming: whether images are read from the files at each step.
  """

  def __init__(self, name: str, *, seeds: Sequence[int] | int,
               global_batch_size: int, data_dir=None, split_sizes=None,
               train_examples: int | None = None, label_fraction=None,
               label_budget=None, shuffle_tasks: Sequence[int | str] = (),
               process_index: int | None = None,
               process_count: int | None = None, prefetch: int = 2,
               missing_rate: float = 0.0, tfds_options=None,
               in_memory: str = "auto",
               log: Callable[[str], None] | None = print):
    self.spec = sources.dataset_spec(name, split_sizes, tfds_options,
                                     data_dir)
    self.task_names = self.spec.task_names
    self.tasks = self.spec.tasks
    self.num_tasks = self.spec.num_tasks
    self.image_shape = self.spec.image_shape
    self.seeds = self._check_seeds(seeds)
    if process_index is None or process_count is None:
      import jax  # pylint: disable=g-import-not-at-top
      process_index = jax.process_index() if process_index is None else (
          process_index)
      process_count = jax.process_count() if process_count is None else (
          process_count)
    if not builders.is_positive_int(process_count):
      raise DataError(f"process_count must be a positive integer; got "
                      f"{process_count!r}")
    if not (isinstance(process_index, (int, np.integer))
            and 0 <= process_index < process_count):
      raise DataError(f"process_index must be in [0, {process_count}); got "
                      f"{process_index!r}")
    if not builders.is_positive_int(global_batch_size):
      raise DataError(f"global_batch_size must be a positive integer; got "
                      f"{global_batch_size!r}")
    if global_batch_size % process_count:
      raise DataError(f"global_batch_size={global_batch_size} is not divisible "
                      f"by process_count={process_count}")
    if not isinstance(prefetch, int) or prefetch < 0:
      raise DataError(f"prefetch must be an integer >= 0; got {prefetch!r}")
    fraction = arguments.per_task_fraction(label_fraction, self.task_names)
    budget = arguments.per_task_budget(label_budget, self.task_names)
    if fraction is not None and budget is not None:
      raise DataError("give either label_fraction or label_budget, not both; "
                      f"got label_fraction={label_fraction!r}, "
                      f"label_budget={label_budget!r}")
    shuffle = arguments.task_indices(shuffle_tasks, self.task_names)
    train_size = self.spec.split_sizes["train"]
    num_train = arguments.count(train_examples, "train_examples", train_size,
                                self.spec.name, "train")
    if global_batch_size > num_train:
      raise DataError(f"global_batch_size={global_batch_size} exceeds the "
                      f"{num_train} training examples")

    self.global_batch_size = int(global_batch_size)
    self.local_batch_size = self.global_batch_size // int(process_count)
    self.process_index, self.process_count = int(process_index), int(
        process_count)
    self.num_train = num_train
    self.steps_per_epoch = num_train // self.global_batch_size
    self.prefetch = prefetch

    source = _open(name, "train", data_dir, split_sizes, missing_rate,
                   tfds_options, log)
    self.streaming = not _keep_in_memory(in_memory, num_train,
                                         self.image_shape)
    self._images, stored = _scan(source, num_train,
                                 images=not self.streaming)
    self._source = source if self.streaming else None
    observed = task_types.observed(self.tasks, stored)
    per_seed = []
    for s in self.seeds:
      try:
        per_seed.append(labels_lib.apply_typed_label_controls(
            stored, observed, seed=s, fraction=fraction, budget=budget,
            shuffle_tasks=shuffle, task_names=self.task_names))
      except ValueError as e:  # labels.py is generic; name the field here.
        field = "label_budget" if budget is not None else "label_fraction"
        raise DataError(f"{field}: {e} (train_examples={num_train})") from e
    self.labels = np.stack([l for l, _ in per_seed])
    self.masks = np.stack([m for _, m in per_seed])
    self._orders = [self._order(s) for s in self.seeds]

  @staticmethod
  def _check_seeds(seeds) -> tuple[int, ...]:
    seeds = (seeds,) if np.ndim(seeds) == 0 else tuple(seeds)
    if not seeds or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0
        for s in seeds):
      raise DataError(f"seeds must be a non-empty list of integers >= 0; got "
                      f"{seeds!r}")
    return tuple(int(s) for s in seeds)

  def _order(self, seed: int) -> grain.MapDataset:
    """grain dataset: step -> int64 [global_batch] example indices."""
    grain_seed = int(np.random.SeedSequence([seed, _SALT_ORDER])
                     .generate_state(1)[0])
    return (grain.MapDataset.range(self.num_train).shuffle(seed=grain_seed)
            .batch(self.global_batch_size, drop_remainder=True).repeat())

  def indices(self, step: int) -> np.ndarray:
    """int64 [S, B_local]: the train-example indices of this host's batch."""
    if not isinstance(step, (int, np.integer)) or step < 0:
      raise DataError(f"step must be an integer >= 0; got {step!r}")
    idx = np.stack([np.asarray(order[int(step)]) for order in self._orders])
    lo = self.process_index * self.local_batch_size
    return idx[:, lo:lo + self.local_batch_size]

  def _batch_images(self, idx: np.ndarray) -> np.ndarray:
    """uint8 [S, B, H, W, C] images at idx [S, B]."""
    if not self.streaming:
      return self._images[idx]
    # Each record once, in file order, even when seeds share examples.
    unique, inverse = np.unique(idx, return_inverse=True)
    images, _ = self._source.read(unique)
    return images[inverse.reshape(idx.shape)]

  def batch(self, step: int) -> dict:
    """The batch of `step` (a pure function of the seeds and the step)."""
    idx = self.indices(step)
    rows = np.arange(len(self.seeds))[:, None]
    return {
        "image": normalize(self._batch_images(idx)),
        "labels": self.labels[rows, idx],
        "mask": self.masks[rows, idx],
    }

  def batches(self, start_step: int = 0) -> Iterator[dict]:
    """Endless iterator over `batch(start_step)`, `batch(start_step + 1)`, ...

    grain prefetches `prefetch` batches on a background thread: in memory a
    batch is one numpy gather, streamed it is one read of its records.
    """
    if not isinstance(start_step, (int, np.integer)) or start_step < 0:
      raise DataError(f"start_step must be an integer >= 0; got "
                      f"{start_step!r}")
    steps = grain.MapDataset.range(int(start_step), sys.maxsize).map(
        self.batch)
    options = grain.ReadOptions(num_threads=1 if self.prefetch else 0,
                                prefetch_buffer_size=self.prefetch)
    return iter(steps.to_iter_dataset(options))
