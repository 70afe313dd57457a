"""Vectorised numpy renderer for the procedural `mtl_scenes` street scenes.

Each image is a small RGB street scene with four binary tasks (the
lecture's self-driving example): pedestrian, car, stop_sign, traffic_light.
Objects are drawn as anti-aliased signed-distance shapes on a whole batch of
images at once: every per-image parameter is an array of shape (N, 1, 1) that
broadcasts against the (1, H, W) pixel grid, so a chunk of 1000 images costs a
few dozen array operations and no per-pixel python.

Difficulty comes from clutter, noise, occluders and *distractors* that share
low-level features with the objects (red non-octagons, wheel-less boxes,
poles without lights, headless torsos...), so that no task is solved by one
colour statistic and the tasks share edge/colour/shape features.

The `unrelated` control (`render_unrelated`) instead carries each label by its
own cue that shares nothing with the other three.

Measured difficulty (`mtljax sweep --config experiments/difficulty.py`; one MTL
CNN of width 16, 2000 steps of batch 128, 3 seeds; builder version 1.1.0): mean
test AUC 0.952 ± 0.007 trained on the full 50k training split (pedestrian 0.87,
car 0.97, stop_sign 0.99, traffic_light 0.98), against 0.585 ± 0.163 with 300
labels per task.
"""

from __future__ import annotations

import dataclasses

import numpy as np

TASK_NAMES = ("pedestrian", "car", "stop_sign", "traffic_light")

# Images per independently seeded chunk. Fixed (not a parameter) so that the
# i-th example of a split does not depend on how large the split is.
CHUNK_SIZE = 1000

_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass(frozen=True)
class SceneParams:
  """Knobs of the scene renderer (calibrated defaults, see module docs).

  Attributes:
    size: image height and width in pixels.
    object_prob: probability that each of the four objects is present.
    distractor_prob: probability of each of the distractor kinds.
    noise_std: std of the additive per-pixel Gaussian noise (0..1 scale).
    n_clutter: number of random background blobs/lines per image.
    n_occluders: number of small random blobs drawn over the objects.
  """

  size: int = 32
  object_prob: float = 0.45
  distractor_prob: float = 0.5
  noise_std: float = 0.08
  n_clutter: int = 5
  n_occluders: int = 2


def chunk_rng(seed: int, split: str, chunk: int) -> np.random.Generator:
  """Independent generator for one chunk of one split.

  Args:
    seed: dataset seed.
    split: "train", "validation" or "test".
    chunk: chunk number within the split.

  Returns:
    A numpy Generator; the same arguments always give the same stream.
  """
  return np.random.default_rng([seed, _SPLIT_IDS[split], chunk])


# ------------------------------------------------------------------ drawing.


class _Canvas:
  """A batch of float images plus the shared pixel grid and SDF helpers."""

  def __init__(self, rng: np.random.Generator, n: int, size: int):
    self.rng, self.n, self.size = rng, n, size
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    self.yy = coords[None, :, None]  # (1, H, 1) -> broadcasts to (N, H, W)
    self.xx = coords[None, None, :]
    self.img = np.zeros((n, size, size, 3), np.float32)

  def u(self, lo, hi):
    """Uniform per-image parameter of shape (N, 1, 1)."""
    return self.rng.uniform(lo, hi, (self.n, 1, 1)).astype(np.float32)

  def bern(self, p):
    return (self.rng.random((self.n, 1, 1)) < p).astype(np.float32)

  def color(self, base, jitter):
    """(N, 3) colours around `base` with uniform jitter."""
    base = np.broadcast_to(np.asarray(base, np.float32), (self.n, 3))
    c = base + self.rng.uniform(-jitter, jitter, (self.n, 3))
    return np.clip(c, 0.0, 1.0).astype(np.float32)

  def rand_color(self):
    return self.rng.uniform(0.0, 1.0, (self.n, 3)).astype(np.float32)

  def paint(self, dist, color, on):
    """Alpha-blends `color` where the signed distance `dist` is negative.

    Args:
      dist: (N, H, W) signed distance in image-fraction units.
      color: (N, 3) colours.
      on: (N, 1, 1) 0/1 mask saying which images get the shape.
    """
    # One-pixel linear ramp across the boundary: cheap anti-aliasing, which
    # keeps small shapes from collapsing to a few aliased pixels.
    alpha = np.clip(0.5 - dist * self.size, 0.0, 1.0) * on
    alpha = np.broadcast_to(alpha, self.img.shape[:3])
    # Blend only the covered pixels: shapes cover a few percent of the batch,
    # and this is the renderer's hot loop (a dense blend is ~10x slower).
    flat = alpha.reshape(-1)
    idx = np.flatnonzero(flat > 0)
    pix = self.img.reshape(-1, 3)  # a view: writes land in self.img
    a = flat[idx][:, None]
    pix[idx] += a * (color[idx // (self.size * self.size)] - pix[idx])

  # Signed distances (negative inside), coordinates as fractions of the image.
  def box(self, cx, cy, hw, hh):
    return np.maximum(np.abs(self.xx - cx) - hw, np.abs(self.yy - cy) - hh)

  def circle(self, cx, cy, r):
    return np.sqrt((self.xx - cx) ** 2 + (self.yy - cy) ** 2) - r

  def octagon(self, cx, cy, r):
    dx, dy = np.abs(self.xx - cx), np.abs(self.yy - cy)
    return np.maximum(np.maximum(dx, dy), (dx + dy) * np.float32(0.7071)) - r

  def triangle(self, cx, cy, r):
    """Upward pointing triangle inscribed in a circle of radius ~r."""
    dx, dy = np.abs(self.xx - cx), self.yy - cy
    return np.maximum(dy - 0.5 * r, (dx * 0.866 - dy * 0.5) - 0.5 * r)

  def ellipse(self, cx, cy, a, b):
    d = np.sqrt(((self.xx - cx) / a) ** 2 + ((self.yy - cy) / b) ** 2)
    return (d - 1.0) * np.minimum(a, b)


def _background(c: _Canvas, n_clutter: int) -> None:
  """Sky gradient, horizon, road with lane marks, random blobs and lines."""
  horizon = c.u(0.35, 0.6)
  sky_top = c.color((0.45, 0.6, 0.85), 0.25)[:, None, None, :]
  sky_bot = c.color((0.75, 0.8, 0.9), 0.2)[:, None, None, :]
  t = (c.yy / horizon)[..., None]
  c.img = sky_top * (1 - t) + sky_bot * t + np.zeros_like(c.img)
  road = c.color((0.35, 0.35, 0.37), 0.15)
  c.paint(-(c.yy - horizon) + 0 * c.xx, road, 1.0)
  lane = c.color((0.9, 0.9, 0.8), 0.1)
  c.paint(c.box(c.u(0.3, 0.7), c.u(0.7, 0.95), c.u(0.01, 0.06), 0.012),
          lane, c.bern(0.6))
  for _ in range(n_clutter):
    kind = c.bern(0.5)
    cx, cy = c.u(0.0, 1.0), c.u(0.0, 1.0)
    blob = c.ellipse(cx, cy, c.u(0.03, 0.2), c.u(0.03, 0.2))
    line = c.box(cx, cy, c.u(0.005, 0.3), c.u(0.005, 0.02))
    c.paint(np.where(kind > 0, blob, line), c.rand_color(), 1.0)


# Object painters. Each draws the object into the images where `on` is 1.


def _stop_sign(c: _Canvas, on) -> None:
  cx, cy, r = c.u(0.12, 0.88), c.u(0.15, 0.6), c.u(0.07, 0.12)
  c.paint(c.box(cx, cy + 2 * r, 0.012, 2 * r), c.color((0.5, 0.5, 0.5), 0.1),
          on)
  c.paint(c.octagon(cx, cy, r), c.color((0.85, 0.08, 0.08), 0.12), on)
  # The white "STOP" lettering band is part of what makes it a stop sign.
  c.paint(c.box(cx, cy, 0.6 * r, 0.16 * r), c.color((0.95, 0.95, 0.95), 0.05),
          on)


def _traffic_light(c: _Canvas, on) -> None:
  cx, cy, s = c.u(0.1, 0.9), c.u(0.15, 0.55), c.u(0.035, 0.055)
  c.paint(c.box(cx, cy + 4 * s, 0.012, 3 * s), c.color((0.4, 0.4, 0.4), 0.1),
          on)
  c.paint(c.box(cx, cy, s, 2.4 * s), c.color((0.12, 0.12, 0.1), 0.08), on)
  lit = c.rng.integers(0, 3, (c.n, 1, 1))
  lamp = np.array([(1.0, 0.15, 0.1), (1.0, 0.85, 0.1), (0.2, 1.0, 0.3)],
                  np.float32)
  for k, dy in enumerate((-1.5, 0.0, 1.5)):
    bright = (lit[:, 0, 0] == k)[:, None]
    col = np.where(bright, lamp[k], lamp[k] * 0.3)
    col = np.clip(col + c.rng.uniform(-0.1, 0.1, (c.n, 3)), 0, 1)
    c.paint(c.circle(cx, cy + dy * s, 0.7 * s), col.astype(np.float32), on)


def _car(c: _Canvas, on) -> None:
  cx, cy = c.u(0.12, 0.88), c.u(0.62, 0.88)
  hw, hh = c.u(0.08, 0.14), c.u(0.03, 0.045)
  body = c.rand_color()
  c.paint(c.box(cx, cy - 1.6 * hh, 0.6 * hw, 0.7 * hh), body, on)  # cabin
  c.paint(c.box(cx, cy - 1.6 * hh, 0.45 * hw, 0.45 * hh),
          c.color((0.6, 0.75, 0.9), 0.1), on)  # window
  c.paint(c.box(cx, cy, hw, hh), body, on)
  wheel = c.color((0.05, 0.05, 0.05), 0.05)
  for side in (-1, 1):
    c.paint(c.circle(cx + side * 0.65 * hw, cy + hh, 0.9 * hh), wheel, on)


def _pedestrian(c: _Canvas, on) -> None:
  cx, cy, s = c.u(0.08, 0.92), c.u(0.45, 0.72), c.u(0.06, 0.085)
  legs = c.color((0.15, 0.15, 0.3), 0.15)
  for side in (-1, 1):
    c.paint(c.box(cx + side * 0.45 * s, cy + 2.2 * s, 0.3 * s, 1.2 * s), legs,
            on)
  c.paint(c.box(cx, cy, 0.9 * s, 1.3 * s), c.rand_color(), on)  # torso
  c.paint(c.circle(cx, cy - 2.0 * s, 0.7 * s),
          c.color((0.85, 0.65, 0.5), 0.15), on)  # head


def _distractors(c: _Canvas, p: float) -> None:
  """Shapes sharing colours/edges with the objects but not being them."""
  # Red non-octagons (circle / square / triangle), sometimes on a pole.
  kind = c.rng.integers(0, 3, (c.n, 1, 1))
  cx, cy, r = c.u(0.1, 0.9), c.u(0.1, 0.7), c.u(0.07, 0.12)
  shape = np.where(kind == 0, c.circle(cx, cy, r),
                   np.where(kind == 1, c.box(cx, cy, 0.85 * r, 0.85 * r),
                            c.triangle(cx, cy, 1.2 * r)))
  on = c.bern(p)
  c.paint(c.box(cx, cy + 2 * r, 0.012, 2 * r), c.color((0.5, 0.5, 0.5), 0.1),
          on * c.bern(0.5))
  c.paint(shape, c.color((0.85, 0.08, 0.08), 0.12), on)
  # Poles, possibly with an unlit dark box: a traffic light without lamps.
  cx, cy, s = c.u(0.05, 0.95), c.u(0.15, 0.55), c.u(0.035, 0.055)
  on = c.bern(p)
  c.paint(c.box(cx, cy + 4 * s, 0.012, 3 * s), c.color((0.4, 0.4, 0.4), 0.1),
          on)
  c.paint(c.box(cx, cy, s, 2.4 * s), c.color((0.12, 0.12, 0.1), 0.08),
          on * c.bern(0.5))
  # A lone bright lamp-coloured disc.
  c.paint(c.circle(c.u(0.05, 0.95), c.u(0.05, 0.9), c.u(0.02, 0.04)),
          c.color((0.6, 0.6, 0.2), 0.4), c.bern(p))
  # Wheel-less boxes in car colours (crates, buildings, trucks' trailers).
  cx, cy, hw, hh = c.u(0.1, 0.9), c.u(0.55, 0.9), c.u(0.06, 0.14), c.u(
      0.03, 0.06)
  c.paint(c.box(cx, cy, hw, hh), c.rand_color(), c.bern(p))
  # Pairs of dark discs without a body.
  cx, cy, r = c.u(0.1, 0.9), c.u(0.6, 0.95), c.u(0.025, 0.04)
  on = c.bern(p * 0.5)
  for side in (-1, 1):
    c.paint(c.circle(cx + side * 2.5 * r, cy, r),
            c.color((0.05, 0.05, 0.05), 0.05), on)
  # People-like figures that are not pedestrians: headless torsos on legs, or
  # a skin-toned disc on a box with no legs.
  cx, cy, s = c.u(0.08, 0.92), c.u(0.45, 0.72), c.u(0.06, 0.085)
  headless = c.bern(0.5)
  on = c.bern(p)
  c.paint(c.box(cx, cy + 2.2 * s, 0.9 * s, 1.2 * s),
          c.color((0.15, 0.15, 0.3), 0.15), on * headless)
  c.paint(c.box(cx, cy, 0.9 * s, 1.3 * s), c.rand_color(), on)
  c.paint(c.circle(cx, cy - 2.0 * s, 0.7 * s),
          c.color((0.85, 0.65, 0.5), 0.15), on * (1 - headless))


_OBJECTS = (_pedestrian, _car, _stop_sign, _traffic_light)


def render_scenes(rng: np.random.Generator, n: int,
                  params: SceneParams = SceneParams()):
  """Renders `n` street scenes.

  Args:
    rng: numpy Generator (consumed).
    n: number of images.
    params: renderer knobs.

  Returns:
    (images, labels): uint8 (n, size, size, 3) and int8 (n, 4) in
    `TASK_NAMES` order.
  """
  c = _Canvas(rng, n, params.size)
  _background(c, params.n_clutter)
  labels = (rng.random((n, 4)) < params.object_prob).astype(np.int8)
  # Objects and distractors are drawn in a random interleaving (per chunk) so
  # either can occlude the other.
  painters = [(k, f) for k, f in enumerate(_OBJECTS)] + [(-1, None)]
  for k, f in (painters[i] for i in rng.permutation(len(painters))):
    if f is None:
      _distractors(c, params.distractor_prob)
    else:
      f(c, labels[:, k].astype(np.float32)[:, None, None])
  for _ in range(params.n_occluders):
    c.paint(c.ellipse(c.u(0, 1), c.u(0, 1), c.u(0.02, 0.06), c.u(0.02, 0.06)),
            c.rand_color(), 1.0)
  # Global brightness/contrast jitter, then sensor noise.
  img = c.img * c.u(0.7, 1.2)[..., None] + c.u(-0.1, 0.1)[..., None]
  img += rng.normal(0.0, params.noise_std, img.shape).astype(np.float32)
  return _to_uint8(img), labels


def render_unrelated(rng: np.random.Generator, n: int, size: int = 32,
                     object_prob: float = 0.45, noise_std: float = 0.1):
  """Renders the `unrelated` control: four tasks with disjoint cues.

  Each label is carried by its own cue so that a shared encoder has nothing
  to share (the four task names are kept for API uniformity):

  * task 0 ("pedestrian"): a sinusoidal grating in the top-left quadrant is
    fine (period ~2.5 px) rather than coarse (period ~7 px).
  * task 1 ("car"): the blue channel is offset up rather than down relative
    to red/green, over the whole image.
  * task 2 ("stop_sign"): the bottom-right quadrant holds a plus-shaped
    5-dot pattern rather than 5 scattered dots.
  * task 3 ("traffic_light"): a global brightness ramp increases left to
    right rather than right to left.

  Args:
    rng: numpy Generator (consumed).
    n: number of images.
    size: image height and width.
    object_prob: probability that each label is 1.
    noise_std: std of the additive Gaussian pixel noise.

  Returns:
    (images, labels): uint8 (n, size, size, 3), int8 (n, 4).
  """
  c = _Canvas(rng, n, size)
  labels = (rng.random((n, 4)) < object_prob).astype(np.int8)
  lab = labels.astype(np.float32)[:, :, None, None]  # (N, 4, 1, 1)
  base = c.color((0.5, 0.5, 0.5), 0.2)[:, None, None, :]
  img = np.broadcast_to(base, c.img.shape).copy()
  # Task 3: horizontal ramp whose sign is the label.
  ramp = (c.xx - 0.5) * c.u(0.15, 0.35) * (2 * lab[:, 3] - 1)
  img += ramp[..., None]
  # Task 1: blue vs red/green offset.
  off = c.u(0.02, 0.08)[:, 0, 0] * (2 * lab[:, 1, 0, 0] - 1)
  img += (off[:, None] * np.array([-0.5, -0.5, 1.0], np.float32))[:, None,
                                                                  None, :]
  # Task 0: grating in the top-left quadrant.
  period = np.where(lab[:, 0] > 0, c.u(2.2, 2.8), c.u(6.0, 8.0)) / size
  theta = c.u(0, np.pi)
  phase = (c.xx * np.cos(theta) + c.yy * np.sin(theta)) / period
  grating = 0.12 * np.sin(2 * np.pi * phase + c.u(0, 2 * np.pi))
  quad = ((c.xx < 0.5) & (c.yy < 0.5)).astype(np.float32)
  img += (grating * quad)[..., None]
  # Task 2: five dots in the bottom-right quadrant, plus-shaped or scattered.
  cx, cy, step = c.u(0.62, 0.88), c.u(0.62, 0.88), np.float32(2.5 / size)
  plus = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]
  dot_col = c.color((0.5, 0.5, 0.5), 0.5)
  for dx, dy in plus:
    px = np.where(lab[:, 2] > 0, cx + dx * step, c.u(0.52, 0.98))
    py = np.where(lab[:, 2] > 0, cy + dy * step, c.u(0.52, 0.98))
    c.img = img
    c.paint(c.circle(px, py, 0.7 / size), dot_col, 1.0)
    img = c.img
  img += rng.normal(0.0, noise_std, img.shape).astype(np.float32)
  return _to_uint8(img), labels


def _to_uint8(img: np.ndarray) -> np.ndarray:
  return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def generate_split(seed: int, split: str, num_examples: int, mode: str,
                   params: SceneParams = SceneParams()):
  """Yields (images, labels) chunks covering a split, deterministically.

  Args:
    seed: dataset seed.
    split: "train", "validation" or "test".
    num_examples: total images to generate.
    mode: "shared" (street scenes) or "unrelated" (control).
    params: renderer knobs.

  Yields:
    (images uint8 (k, H, W, 3), labels int8 (k, 4)) with k <= CHUNK_SIZE; the
    chunks concatenate to `num_examples` examples in index order.
  """
  for chunk, start in enumerate(range(0, num_examples, CHUNK_SIZE)):
    k = min(CHUNK_SIZE, num_examples - start)
    rng = chunk_rng(seed, split, chunk)
    # Always render a full chunk and truncate, so that example i is the same
    # whatever the split size (a tiny test build is a prefix of the real one).
    if mode == "shared":
      images, labels = render_scenes(rng, CHUNK_SIZE, params)
    elif mode == "unrelated":
      images, labels = render_unrelated(rng, CHUNK_SIZE, params.size,
                                        params.object_prob)
    else:
      raise ValueError(f"unknown scene mode {mode!r}; "
                       "expected 'shared' or 'unrelated'")
    yield images[:k], labels[:k]
