"""Renderer for `mtl_scenes/attributes`: street scenes with mixed task types.

The seed lecture's street scenes (`scenes.py`: the same background, clutter,
distractors, occluders, pedestrians and object drawing) with four tasks of
three types about the objects in them:

  * `pedestrian` (binary): a pedestrian is in the scene (p = 0.5).
  * `num_cars` (regression): how many cars, 0..3 (uniform). Cars stand in
    three side-by-side slots (jittered; a random subset of them is taken), so
    they never overlap each other; other objects and occluders may cover
    them.
  * `light_state` (multiclass, 3): no traffic light / red / green (uniform).
    The light is scenes' traffic light (pole, dark housing, three lamps: red
    on top, amber, green at the bottom) with the red or green lamp lit and
    the others dim. It is drawn after everything else (before the global
    brightness jitter and the noise), so the lit lamp is never occluded:
    its colour is always visible.
  * `stop_x` (regression): the stop sign's centre x as a fraction of the
    width, in [0.12, 0.88]; "?" (NaN) when there is no stop sign (p = 0.5):
    a real missing label, not a masked one.

The tasks share mid-level features by construction: every object is drawn by
the same signed-distance renderers as `mtl_scenes`, among the same
distractors (red non-octagons on poles, unlit light housings, lone lamp-
coloured discs, wheel-less boxes, wheel pairs without a body, people-like
figures), so e.g. the red-octagon detector that finds the stop sign must not
fire on red lamps or red discs, and counting cars needs the wheel and body
detectors of `mtl_scenes`' car task.

Generation is chunked like `scenes.generate_split` (each chunk from its own
seeded generator, example i independent of the split size). A chunk of 1000
costs about as much as one of `mtl_scenes`; the default build (20000/5000/
5000, smaller than mtl_scenes' so that it takes under 30 s on 2 cores, half
of that TFDS's serialisation) took 28 s.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mtljax.data import scenes
from mtljax.tasks import types as task_types

TASKS = (
    task_types.Binary("pedestrian"),
    task_types.Regression("num_cars"),
    task_types.Multiclass("light_state", 3),
    task_types.Regression("stop_x"),
)
TASK_NAMES = tuple(t.name for t in TASKS)
LIGHT_STATES = ("none", "red", "green")
MAX_CARS = 3
CHUNK_SIZE = 1000  # Fixed so that example i is independent of the split size.

# scenes' renderers, shared on purpose: the same objects, distractors and
# background as mtl_scenes (scenes keeps them private to its module).
# pylint: disable=protected-access
_Canvas = scenes._Canvas
_background = scenes._background
_pedestrian = scenes._pedestrian
_distractors = scenes._distractors
_to_uint8 = scenes._to_uint8
# pylint: enable=protected-access

_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
# Keeps these streams apart from `mtl_scenes` (whose chunk seeds have no salt).
_SALT = 0x6174_7472  # "attr"
_LAMPS = np.array([(1.0, 0.15, 0.1), (1.0, 0.85, 0.1), (0.2, 1.0, 0.3)],
                  np.float32)  # red, amber, green: top to bottom
_LAMP_DY = (-1.5, 0.0, 1.5)  # lamp centres, in units of the light's s
_LIT_LAMP = {1: 0, 2: 2}  # light_state -> the lit lamp (red top, green bottom)
_STOP_X_RANGE = (0.12, 0.88)


@dataclasses.dataclass(frozen=True)
class AttributeParams:
  """Knobs of the attribute-scene renderer.

  Attributes:
    size: image height and width in pixels.
    pedestrian_prob: P(pedestrian present).
    stop_sign_prob: P(stop sign present).
    distractor_prob: probability of each of scenes' distractor kinds.
    noise_std: std of the additive per-pixel Gaussian noise (0..1 scale).
    n_clutter: random background blobs/lines per image.
    n_occluders: small random blobs drawn over the objects.
  """

  size: int = 32
  pedestrian_prob: float = 0.5
  stop_sign_prob: float = 0.5
  distractor_prob: float = 0.5
  noise_std: float = 0.08
  n_clutter: int = 5
  n_occluders: int = 2


def chunk_rng(seed: int, split: str, chunk: int) -> np.random.Generator:
  """Independent generator for one chunk of one split."""
  return np.random.default_rng([seed, _SPLIT_IDS[split], chunk, _SALT])


def _car_at(c, on, cx, cy, hw, hh) -> None:
  """scenes' car (cabin, window, body, two wheels) at a given place."""
  body = c.rand_color()
  c.paint(c.box(cx, cy - 1.6 * hh, 0.6 * hw, 0.7 * hh), body, on)  # cabin
  c.paint(c.box(cx, cy - 1.6 * hh, 0.45 * hw, 0.45 * hh),
          c.color((0.6, 0.75, 0.9), 0.1), on)  # window
  c.paint(c.box(cx, cy, hw, hh), body, on)
  wheel = c.color((0.05, 0.05, 0.05), 0.05)
  for side in (-1, 1):
    c.paint(c.circle(cx + side * 0.65 * hw, cy + hh, 0.9 * hh), wheel, on)


def _cars(c, occupied: np.ndarray) -> None:
  """One car in each occupied slot; occupied: bool [N, MAX_CARS].

  Slot k is centred at x = (k + 0.5) / 3 +- 0.04; a car with its wheels is at
  most 0.21 wide and slot centres are >= 0.25 apart: cars never overlap.
  """
  for k in range(MAX_CARS):
    cx = (k + 0.5) / MAX_CARS + c.u(-0.04, 0.04)
    cy, hw, hh = c.u(0.64, 0.88), c.u(0.07, 0.1), c.u(0.03, 0.042)
    _car_at(c, occupied[:, k].astype(np.float32)[:, None, None], cx, cy, hw,
            hh)


def _stop_sign_at(c, on, cx, info: dict) -> None:
  """scenes' stop sign (pole, red octagon, white band), centred at x = cx.

  Sets info["cy"], info["r"] (float32 [N]): its centre y and radius.
  """
  cy, r = c.u(0.15, 0.6), c.u(0.07, 0.12)
  info.update(cy=cy[:, 0, 0], r=r[:, 0, 0])
  c.paint(c.box(cx, cy + 2 * r, 0.012, 2 * r), c.color((0.5, 0.5, 0.5), 0.1),
          on)
  c.paint(c.octagon(cx, cy, r), c.color((0.85, 0.08, 0.08), 0.12), on)
  c.paint(c.box(cx, cy, 0.6 * r, 0.16 * r), c.color((0.95, 0.95, 0.95), 0.05),
          on)


def _traffic_light_state(c, state: np.ndarray) -> dict:
  """scenes' traffic light with the red (state 1) or green (2) lamp lit.

  Returns:
    {"cx", "cy", "s"}: float32 [N] geometry (a lamp k is centred at
    (cx, cy + _LAMP_DY[k] * s), radius 0.7 s).
  """
  on = (state > 0).astype(np.float32)[:, None, None]
  cx, cy, s = c.u(0.1, 0.9), c.u(0.15, 0.55), c.u(0.035, 0.055)
  c.paint(c.box(cx, cy + 4 * s, 0.012, 3 * s), c.color((0.4, 0.4, 0.4), 0.1),
          on)
  c.paint(c.box(cx, cy, s, 2.4 * s), c.color((0.12, 0.12, 0.1), 0.08), on)
  lit = np.select([state == 1, state == 2], [_LIT_LAMP[1], _LIT_LAMP[2]], -1)
  for k, dy in enumerate(_LAMP_DY):
    bright = (lit == k)[:, None]
    col = np.where(bright, _LAMPS[k], _LAMPS[k] * 0.3)
    col = np.clip(col + c.rng.uniform(-0.1, 0.1, (c.n, 3)), 0, 1)
    c.paint(c.circle(cx, cy + dy * s, 0.7 * s), col.astype(np.float32), on)
  return {"cx": cx[:, 0, 0], "cy": cy[:, 0, 0], "s": s[:, 0, 0]}


def render_attributes(rng: np.random.Generator, n: int,
                      params: AttributeParams = AttributeParams(),
                      return_info: bool = False):
  """Renders `n` attribute scenes.

  Args:
    rng: numpy Generator (consumed).
    n: number of images.
    params: renderer knobs.
    return_info: also return the objects' geometry (for tests).

  Returns:
    (images, labels[, info]): uint8 (n, size, size, 3), float32 (n, 4) in
    `TASK_NAMES` order (stop_x NaN where there is no stop sign), and
    {"light": {"cx", "cy", "s"}, "stop": {"on", "cx", "cy", "r"},
    "occupied": bool [n, 3]}.
  """
  c = _Canvas(rng, n, params.size)
  _background(c, params.n_clutter)
  pedestrian = rng.random(n) < params.pedestrian_prob
  num_cars = rng.integers(0, MAX_CARS + 1, n)
  light = rng.integers(0, len(LIGHT_STATES), n)
  stop = rng.random(n) < params.stop_sign_prob
  stop_x = c.u(*_STOP_X_RANGE)
  # A random subset of num_cars of the three slots: slot k is taken iff its
  # rank in a random order is below the count.
  rank = np.argsort(np.argsort(rng.random((n, MAX_CARS)), 1), 1)
  occupied = rank < num_cars[:, None]
  stop_info = {"on": stop, "cx": stop_x[:, 0, 0]}

  def as_on(b):
    return b.astype(np.float32)[:, None, None]

  painters = [
      lambda: _pedestrian(c, as_on(pedestrian)),
      lambda: _cars(c, occupied),
      lambda: _stop_sign_at(c, as_on(stop), stop_x, stop_info),
      lambda: _distractors(c, params.distractor_prob),
  ]
  # Objects and distractors in a random interleaving (per chunk), so either
  # can occlude the other; the traffic light goes on top of everything.
  for i in rng.permutation(len(painters)):
    painters[i]()
  for _ in range(params.n_occluders):
    c.paint(c.ellipse(c.u(0, 1), c.u(0, 1), c.u(0.02, 0.06), c.u(0.02, 0.06)),
            c.rand_color(), 1.0)
  light_info = _traffic_light_state(c, light)
  # Global brightness/contrast jitter, then sensor noise (as in scenes).
  img = c.img * c.u(0.7, 1.2)[..., None] + c.u(-0.1, 0.1)[..., None]
  img += rng.normal(0.0, params.noise_std, img.shape).astype(np.float32)
  images = _to_uint8(img)

  labels = np.stack([
      pedestrian.astype(np.float32),
      num_cars.astype(np.float32),
      light.astype(np.float32),
      np.where(stop, stop_x[:, 0, 0], np.nan).astype(np.float32),
  ], 1)
  if return_info:
    return images, labels, {"light": light_info, "stop": stop_info,
                            "occupied": occupied}
  return images, labels


def generate_split(seed: int, split: str, num_examples: int,
                   params: AttributeParams = AttributeParams()):
  """Yields (images, labels) chunks covering a split, deterministically.

  Yields:
    (images uint8 (k, H, W, 3), labels float32 (k, 4)) with k <= CHUNK_SIZE;
    the chunks concatenate to `num_examples` examples in index order.
  """
  if split not in _SPLIT_IDS:
    raise ValueError(f"unknown split {split!r}; expected one of "
                     f"{tuple(_SPLIT_IDS)}")
  for chunk, start in enumerate(range(0, num_examples, CHUNK_SIZE)):
    k = min(CHUNK_SIZE, num_examples - start)
    # Render a full chunk and truncate: example i is then independent of the
    # split size.
    images, labels = render_attributes(chunk_rng(seed, split, chunk),
                                       CHUNK_SIZE, params)
    yield images[:k], labels[:k]
