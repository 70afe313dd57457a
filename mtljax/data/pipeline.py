"""Reading the built datasets: numpy splits, eval arrays, the grain train feed.

Access path. `load_split` reads a split through the builder's TFDS data source
(`builder.as_data_source(split)`, which is what `tfds.data_source` returns:
ArrayRecord random access, no TensorFlow) with `__getitems__` in chunks,
stacks it into numpy arrays and validates it. The
datasets are small (the default `mtl_scenes` train split is 150 MB of uint8),
so `TrainPipeline` loads the train split into memory once and grain indexes
into those arrays: reading a batch is then one numpy gather, instead of
thousands of record decodes per step, and every seed of a vmapped run shares
the one copy of the images.

Training order. For each seed s, grain's
`MapDataset.range(N).shuffle(seed=g(s)).batch(B, drop_remainder=True)
.repeat()` gives the example indices of each global batch: a fresh
permutation per epoch, the last partial batch of each epoch dropped. grain's
shuffle is a pure function of (seed, epoch, position), so `batch(step)` is a
pure function of (seed, step) and a run resumed at step k sees exactly the
batches of an uninterrupted run. `g(s)` hashes the seed because grain seeds
epoch e with seed + e: raw seeds 0 and 1 would share all but one epoch order.

Labels. Seed s trains on `apply_label_controls(stored_train_labels, seed=s,
...)` (see `labels.py`), a per-seed property of the pipeline: the MTL and
STL arms of one seed, fed by the same pipeline, see the same labels and masks.

Images are normalised by `normalize` (x / 255 - 0.5), in training and eval.
"""

from __future__ import annotations

import sys
from typing import Callable, Iterator, Sequence

import grain
import numpy as np

from mtljax.data import builders
from mtljax.data import labels as labels_lib
from mtljax.data.builders import DataError

_READ_CHUNK = 4096  # records per `__getitems__` call when loading a split.
_SALT_ORDER = 0x6F72_6465  # "orde": seeds the grain shuffle from the run seed.


def normalize(images: np.ndarray) -> np.ndarray:
  """uint8 images -> float32 in [-0.5, 0.5] (x / 255 - 0.5).

  A fixed affine map rather than per-channel dataset statistics: it needs no
  pass over the data, is identical for every dataset, seed and label subset,
  and keeps inputs centred well enough for the small encoders used here.
  """
  return np.asarray(images, np.float32) * np.float32(1.0 / 255.0) - np.float32(
      0.5)


def _check_split(split: str) -> str:
  if split not in builders.SPLITS:
    raise DataError(f"unknown split {split!r}; valid splits: {builders.SPLITS}")
  return split


def _count(value, what: str, limit: int, name: str, split: str) -> int:
  """Validates an example count: None or -1 means all `limit` examples."""
  if value is None or (not isinstance(value, bool) and value == -1):
    return limit
  if not builders.is_positive_int(value):
    raise DataError(f"{what} must be a positive integer (or -1/None for all); "
                    f"got {value!r}")
  if value > limit:
    raise DataError(f"{what}={value} exceeds the {limit} examples of "
                    f"{name} split {split!r}")
  return int(value)


def check_examples(where: str, task_names: Sequence[str], first: int = 0, *,
                   images: np.ndarray | None = None,
                   labels: np.ndarray | None = None) -> None:
  """Rejects stored values that a model must never see, naming the first.

  Runs on the values as stored, before they are cast to uint8/int8: a cast
  would silently turn a NaN pixel or a label of 0.5 into something valid.

  Args:
    where: what is being read (dataset, split, directory), for the message.
    task_names: the label columns' names.
    first: index of the first example in `images`/`labels`.
    images: [n, H, W, C] pixel values: finite and in [0, 255].
    labels: [n, T] label values: each -1 ("?"), 0 or 1.

  Raises:
    DataError: the first bad value, with its example index (and task).
  """
  if images is not None:
    images = np.asarray(images)
    if not (images.dtype == np.uint8 or images.size == 0):
      bad = (images < 0) | (images > 255)
      if images.dtype.kind in "fc":
        bad |= ~np.isfinite(images)
      if bad.any():
        i = int(np.argwhere(bad)[0][0])
        value = images[i][bad[i]][0]
        raise DataError(f"{where}: pixel value {value} at example {first + i} "
                        "is not a finite value in [0, 255]; rebuild the "
                        "dataset")
  if labels is not None:
    labels = np.asarray(labels)
    bad = ~np.isin(labels, (-1, 0, 1))
    if bad.any():
      i, t = map(int, np.argwhere(bad)[0])
      raise DataError(f"{where}: label value {labels[i, t]} at example "
                      f"{first + i}, task {task_names[t]!r} is not one of -1, "
                      "0, 1")


def _unreadable(where: str, directory: str, e: Exception) -> DataError:
  return DataError(f"cannot read {where}: {type(e).__name__}: "
                   f"{builders.error_text(e)}. The built dataset is corrupt or "
                   f"incomplete: delete {directory} and it is rebuilt on first "
                   "use")


def load_split(name: str, split: str, data_dir=None, split_sizes=None,
               num_examples: int | None = None, *,
               missing_rate: float = 0.0,
               log: Callable[[str], None] | None = print) -> dict:
  """Reads (the first `num_examples` of) a split into numpy arrays.

  Builds the dataset first if it is not built yet, and checks the split's
  files against the checksum recorded at build time before reading them
  (`builders.verify_split`; a build without recorded checksums gets them on
  this first read).

  Args:
    name: one of `DATASET_NAMES`.
    split: "train", "validation" or "test".
    data_dir: see `resolve_data_dir`.
    split_sizes: which build to read: None (defaults), {split: n} or 3 ints.
    num_examples: read only the first n examples (None or -1: all).
    missing_rate: which build to read (see `builders.build`).
    log: receives the "building ..." line if a build happens.

  Returns:
    {"image": uint8 [N, H, W, C], "labels": int8 [N, T] in {-1, 0, 1}}.

  Raises:
    DataError: bad arguments, or stored data that cannot be read (corrupt or
      missing files), differs from its recorded checksum (e.g. a damaged
      file or two splits' files swapped), has the wrong shapes, label values
      outside {-1, 0, 1}, non-finite or out-of-range pixels, or records out
      of order.
  """
  _check_split(split)
  spec = builders.build(name, data_dir, split_sizes, log=log,
                        missing_rate=missing_rate)
  builder = builders.get_builder(name, data_dir, split_sizes, missing_rate)
  where = f"{spec.name} split {split!r} in {builder.data_dir}"
  # Reading can only fail on a damaged build (the code that wrote it is ours):
  # name the directory rather than show array_record's traceback.
  try:
    # First: a file swapped with another split's reads back as valid records.
    builders.verify_split(builder, split, where)
    source = builder.as_data_source(split)
    size = len(source)
  except DataError:
    raise
  except Exception as e:  # noqa: BLE001
    raise _unreadable(where, builder.data_dir, e) from e
  n = _count(num_examples, "num_examples", size, spec.name, split)
  images = np.empty((n,) + spec.image_shape, np.uint8)
  labels = np.empty((n, spec.num_tasks), np.int8)
  for start in range(0, n, _READ_CHUNK):
    stop = min(n, start + _READ_CHUNK)
    try:
      records = source.__getitems__(list(range(start, stop)))
    except Exception as e:  # noqa: BLE001
      raise _unreadable(where, builder.data_dir, e) from e
    index = np.array([r["index"] for r in records])
    if not np.array_equal(index, np.arange(start, stop)):
      raise DataError(f"{where}: records are out of order near example "
                      f"{start}; rebuild the dataset")
    for key, out in (("image", images), ("labels", labels)):
      values = [r[key] for r in records]
      bad = [i for i, v in enumerate(values) if np.shape(v) != out.shape[1:]]
      if bad:
        raise DataError(f"{where}: stored {key!r} of example {start + bad[0]} "
                        f"has shape {np.shape(values[bad[0]])}, expected "
                        f"{out.shape[1:]} (the model's input and task count)")
      values = np.stack(values)
      check_examples(where, spec.task_names, start,
                     **{"images" if key == "image" else "labels": values})
      out[start:stop] = values
  return {"image": images, "labels": labels}


def eval_arrays(name: str, split: str, data_dir=None, split_sizes=None,
                num_examples: int | None = None, *,
                missing_rate: float = 0.0,
                log: Callable[[str], None] | None = print):
  """A validation/test split, ready for evaluation.

  Evaluation splits get no label controls: every stored label counts
  (only labels stored as -1 are masked out).

  Args:
    name, split, data_dir, split_sizes, missing_rate, log: as in `load_split`.
    num_examples: a cap: the first min(num_examples, split size) examples
      (None or -1: all), so one experiment config can cap evaluation on
      datasets whose evaluation splits differ in size.

  Returns:
    (images float32 [N, H, W, C] (normalised), labels int8 [N, T] in {0, 1},
    mask bool [N, T]).
  """
  size = builders.dataset_spec(name, split_sizes).split_sizes[
      _check_split(split)]
  # Validated against "no limit" first, so a too-large cap is not an error.
  num_examples = min(_count(num_examples, "num_examples", sys.maxsize, name,
                            split), size)
  data = load_split(name, split, data_dir, split_sizes, num_examples,
                    missing_rate=missing_rate, log=log)
  mask = data["labels"] >= 0
  return normalize(data["image"]), (data["labels"] == 1).astype(np.int8), mask


def _one_per_task(field, value, task_names) -> list:
  """A scalar or a 1-sequence broadcasts to every task; else one per task."""
  values = [value] if np.ndim(value) == 0 else list(value)
  if len(values) == 1:
    values = values * len(task_names)
  if len(values) != len(task_names):
    raise DataError(f"{field} needs one value or one per task "
                    f"({len(task_names)}); got {value!r}")
  return values


def _per_task_fraction(label_fraction, task_names):
  """None / scalar / per-task fractions, with -1 meaning "all" -> labels.py."""
  if label_fraction is None:
    return None
  values = _one_per_task("label_fraction", label_fraction, task_names)
  out = []
  for t, v in zip(task_names, values):
    try:
      v = float(v)
    except (TypeError, ValueError):
      raise DataError(f"label_fraction for {t!r} must be a number; "
                      f"got {v!r}") from None
    if v == -1.0:
      v = 1.0  # Keeping a fraction 1 of the observed labels keeps all.
    elif not 0.0 <= v <= 1.0:  # Also rejects NaN.
      raise DataError(f"label_fraction for {t!r} must be in [0, 1] (or -1 for "
                      f"all); got {v}")
    out.append(v)
  return None if all(v == 1.0 for v in out) else out


def _per_task_budget(label_budget, task_names):
  if label_budget is None:
    return None
  values = _one_per_task("label_budget", label_budget, task_names)
  return None if all(not isinstance(v, bool) and v == -1 for v in values) \
      else values


def _task_indices(shuffle_tasks, task_names) -> tuple[int, ...]:
  """Task names or indices -> indices."""
  out = []
  if isinstance(shuffle_tasks, (str, int, np.integer)):
    shuffle_tasks = (shuffle_tasks,)
  for t in shuffle_tasks:
    if isinstance(t, str):
      if t not in task_names:
        raise DataError(f"shuffle_tasks: unknown task {t!r}; tasks: "
                        f"{tuple(task_names)}")
      out.append(task_names.index(t))
    elif isinstance(t, (int, np.integer)) and 0 <= t < len(task_names):
      out.append(int(t))
    else:
      raise DataError(f"shuffle_tasks: {t!r} is not a task name or an index "
                      f"in [0, {len(task_names)})")
  if len(set(out)) != len(out):
    raise DataError(f"shuffle_tasks lists a task twice: {tuple(shuffle_tasks)}")
  return tuple(out)


class TrainPipeline:
  """Training batches for several seeds at once, a pure function of the step.

  Each batch is {"image": float32 [S, B, H, W, C], "labels": float32
  [S, B, T] in {0, 1}, "mask": bool [S, B, T]} with S = len(seeds) and B the
  local batch size (global batch / process_count; process p gets the p-th
  contiguous slice of every global batch).

  Attributes:
    spec: the dataset's `DatasetSpec`.
    seeds: the seeds, one per leading-axis row of a batch.
    task_names, num_tasks, image_shape: as in the spec.
    num_train: training examples used (the first `train_examples`).
    global_batch_size, local_batch_size: examples per step, all / this host.
    steps_per_epoch: num_train // global_batch_size.
    labels, masks: int8 / bool [S, num_train, T]: each seed's training labels
      (unkept ones set to 0) and which of them are kept.
  """

  def __init__(self, name: str, *, seeds: Sequence[int] | int,
               global_batch_size: int, data_dir=None, split_sizes=None,
               train_examples: int | None = None, label_fraction=None,
               label_budget=None, shuffle_tasks: Sequence[int | str] = (),
               process_index: int | None = None,
               process_count: int | None = None, prefetch: int = 2,
               missing_rate: float = 0.0,
               log: Callable[[str], None] | None = print):
    self.spec = builders.dataset_spec(name, split_sizes)
    self.task_names = self.spec.task_names
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
    fraction = _per_task_fraction(label_fraction, self.task_names)
    budget = _per_task_budget(label_budget, self.task_names)
    if fraction is not None and budget is not None:
      raise DataError("give either label_fraction or label_budget, not both; "
                      f"got label_fraction={label_fraction!r}, "
                      f"label_budget={label_budget!r}")
    shuffle = _task_indices(shuffle_tasks, self.task_names)
    train_size = self.spec.split_sizes["train"]
    num_train = _count(train_examples, "train_examples", train_size,
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

    data = load_split(name, "train", data_dir, split_sizes, num_train,
                      missing_rate=missing_rate, log=log)
    self._images = data["image"]
    per_seed = []
    for s in self.seeds:
      try:
        per_seed.append(labels_lib.apply_label_controls(
            data["labels"], seed=s, fraction=fraction, budget=budget,
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

  def batch(self, step: int) -> dict:
    """The batch of `step` (a pure function of the seeds and the step)."""
    idx = self.indices(step)
    rows = np.arange(len(self.seeds))[:, None]
    return {
        "image": normalize(self._images[idx]),
        "labels": self.labels[rows, idx].astype(np.float32),
        "mask": self.masks[rows, idx],
    }

  def batches(self, start_step: int = 0) -> Iterator[dict]:
    """Endless iterator over `batch(start_step)`, `batch(start_step + 1)`, ...

    grain prefetches `prefetch` batches on a background thread (one thread:
    a batch is one numpy gather, and the host has few cores to spare).
    """
    if not isinstance(start_step, (int, np.integer)) or start_step < 0:
      raise DataError(f"start_step must be an integer >= 0; got "
                      f"{start_step!r}")
    steps = grain.MapDataset.range(int(start_step), sys.maxsize).map(
        self.batch)
    options = grain.ReadOptions(num_threads=1 if self.prefetch else 0,
                                prefetch_buffer_size=self.prefetch)
    return iter(steps.to_iter_dataset(options))
