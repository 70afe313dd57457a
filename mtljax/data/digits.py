"""Vectorised renderer for `digits_multilabel`: canvases of 1-3 real digits.

The source images are sklearn's `load_digits` (1797 8x8 handwritten digits,
values 0..16, shipped with sklearn: no download). The 1797 *source* images are
split once, by a fixed seed, into train/validation/test pools (60/20/20), and a
canvas of a split only ever uses digits of that split's pool: no handwritten
digit seen in training appears in a validation or test canvas, so test accuracy
measures generalisation to new handwriting, not memorised strokes.

A canvas is 24x24x1 uint8 and holds 1-3 digits. The canvas is a 3x3 grid of
8x8 cells; each digit takes a distinct cell and is jittered by up to +-2
pixels, so neighbours overlap by at most 4 pixels (lightly) and overlapping
strokes combine by maximum, like ink. Each digit gets its own contrast in
[0.7, 1] and the canvas gets Gaussian pixel noise. Task "digit_d" is 1 iff a
copy of digit d is on the canvas; with 1-3 uniformly chosen digits each task is
positive for ~19% of canvases (1 - E[0.9^k]).

Generation works like `scenes.generate_split`: fixed-size chunks, each from
its own seeded generator, so example i of a split does not depend on the split
size (a tiny test build is a prefix of the full one).
"""

from __future__ import annotations

import functools

import numpy as np

TASK_NAMES = tuple(f"digit_{d}" for d in range(10))
CANVAS_SIZE = 24
IMAGE_SHAPE = (CANVAS_SIZE, CANVAS_SIZE, 1)
MAX_DIGITS = 3
CHUNK_SIZE = 1000  # Fixed so that example i is independent of the split size.

# Seed of the source-pool split; changing it changes every split's contents.
POOL_SEED = 20240917
POOL_FRACTIONS = (0.6, 0.2, 0.2)
_SPLITS = ("train", "validation", "test")
_SPLIT_IDS = {s: i for i, s in enumerate(_SPLITS)}
# Keeps the canvas streams apart from other users of the same dataset seed.
_SALT = 0x6469_6769  # "digi"
_CELL = 8
_JITTER = 2
_NOISE_STD = 10.0  # in uint8 units


@functools.cache
def _all_sources() -> tuple[np.ndarray, np.ndarray]:
  """All 1797 source digits as uint8 0..255 [N, 8, 8] and int64 targets."""
  # Imported here: sklearn is slow to import and only needed to build.
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  d = load_digits()
  images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
  return images, d.target.astype(np.int64)


@functools.cache
def source_pools() -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """The disjoint train/validation/test pools of source digits.

  Returns:
    {split: (images uint8 [n, 8, 8] in 0..255, targets int64 [n])}; the pools
    partition the 1797 source images (1078/359/360). Treat as read-only.
  """
  images, targets = _all_sources()
  n = len(images)
  perm = np.random.default_rng(POOL_SEED).permutation(n)
  n_train = int(round(POOL_FRACTIONS[0] * n))
  n_val = int(round(POOL_FRACTIONS[1] * n))
  bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_val),
            "test": (n_train + n_val, n)}
  pools = {}
  for split, (lo, hi) in bounds.items():
    idx = np.sort(perm[lo:hi])
    pool = (images[idx], targets[idx])
    for a in pool:
      a.setflags(write=False)  # Cached and shared: guard against mutation.
    pools[split] = pool
  return pools


def render_canvases(rng: np.random.Generator, n: int, pool_images: np.ndarray,
                    pool_targets: np.ndarray,
                    noise_std: float = _NOISE_STD):
  """Renders `n` canvases from one pool of source digits.

  Args:
    rng: numpy Generator (consumed).
    n: number of canvases.
    pool_images: uint8 [P, 8, 8] source digits.
    pool_targets: int [P] their classes.
    noise_std: std of the Gaussian pixel noise, in uint8 units.

  Returns:
    (images, labels): uint8 [n, 24, 24, 1] and int8 [n, 10].
  """
  count = rng.integers(1, MAX_DIGITS + 1, n)
  # k distinct cells of the 3x3 grid: the first MAX_DIGITS of a random order.
  cells = np.argsort(rng.random((n, 9)), axis=1)[:, :MAX_DIGITS]
  source = rng.integers(0, len(pool_images), (n, MAX_DIGITS))
  jitter = rng.integers(-_JITTER, _JITTER + 1, (n, MAX_DIGITS, 2))
  contrast = rng.uniform(0.7, 1.0, (n, MAX_DIGITS)).astype(np.float32)
  active = np.arange(MAX_DIGITS)[None, :] < count[:, None]  # [n, MAX_DIGITS]

  canvas = np.zeros((n, CANVAS_SIZE, CANVAS_SIZE), np.float32)
  rows = np.arange(n)[:, None, None]
  offsets = np.arange(_CELL)
  hi = CANVAS_SIZE - _CELL
  for j in range(MAX_DIGITS):
    y0 = np.clip((cells[:, j] // 3) * _CELL + jitter[:, j, 0], 0, hi)
    x0 = np.clip((cells[:, j] % 3) * _CELL + jitter[:, j, 1], 0, hi)
    ys = (y0[:, None] + offsets)[:, :, None]  # [n, 8, 1]
    xs = (x0[:, None] + offsets)[:, None, :]  # [n, 1, 8]
    patch = pool_images[source[:, j]].astype(np.float32)
    patch *= (contrast[:, j] * active[:, j])[:, None, None]
    # One slot writes each pixel of an image at most once, so the fancy
    # read-modify-write below has no duplicate indices.
    canvas[rows, ys, xs] = np.maximum(canvas[rows, ys, xs], patch)

  canvas += rng.normal(0.0, noise_std, canvas.shape).astype(np.float32)
  images = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)[..., None]

  labels = np.zeros((n, len(TASK_NAMES)), np.int8)
  classes = np.asarray(pool_targets)[source]  # [n, MAX_DIGITS]
  for j in range(MAX_DIGITS):
    on = active[:, j]
    labels[np.flatnonzero(on), classes[on, j]] = 1
  return images, labels


def chunk_rng(seed: int, split: str, chunk: int) -> np.random.Generator:
  """Independent generator for one chunk of one split."""
  return np.random.default_rng([seed, _SPLIT_IDS[split], chunk, _SALT])


def generate_split(seed: int, split: str, num_examples: int):
  """Yields (images, labels) chunks covering a split, deterministically.

  Args:
    seed: dataset seed.
    split: "train", "validation" or "test"; selects the source pool.
    num_examples: total canvases to generate.

  Yields:
    (images uint8 [k, 24, 24, 1], labels int8 [k, 10]) with k <= CHUNK_SIZE;
    the chunks concatenate to `num_examples` canvases in index order.
  """
  if split not in _SPLIT_IDS:
    raise ValueError(f"unknown split {split!r}; expected one of {_SPLITS}")
  pool_images, pool_targets = source_pools()[split]
  for chunk, start in enumerate(range(0, num_examples, CHUNK_SIZE)):
    k = min(CHUNK_SIZE, num_examples - start)
    # Render a full chunk and truncate: example i is then independent of the
    # split size.
    images, labels = render_canvases(chunk_rng(seed, split, chunk), CHUNK_SIZE,
                                     pool_images, pool_targets)
    yield images[:k], labels[:k]
