"""register_arrays: validation, round trip, content-hash keyed builds."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

import mtljax
from mtljax import registry
from mtljax.data import arrays
from mtljax.data import builders
from mtljax.data import sources
from mtljax.tasks import Binary
from mtljax.tasks import Multiclass
from mtljax.tasks import Regression

TASKS = (Binary("cat"), Multiclass("digit", num_classes=10),
         Regression("age"))
SIZES = {"train": 7, "validation": 3, "test": 2}


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch):
  """Undoes a test's registrations afterwards (the registry is global)."""
  registry.DATASETS.names()  # Loads the built-ins before the copy.
  # pylint: disable=protected-access
  monkeypatch.setattr(registry.DATASETS, "_entries",
                      dict(registry.DATASETS._entries))
  monkeypatch.setattr(arrays, "_STORE", dict(arrays._STORE))
  monkeypatch.setattr(arrays, "_NAMES", dict(arrays._NAMES))


def _splits(seed=0, shape=(5, 4, 3)):
  rng = np.random.default_rng(seed)
  out = {}
  for s, n in SIZES.items():
    x = rng.integers(0, 256, (n,) + shape, dtype=np.uint8)
    y = np.stack([rng.integers(0, 2, n), rng.integers(0, 10, n),
                  rng.normal(size=n)], axis=1)
    out[s] = (x, y)
  # "?" in each type: -1 for classification, NaN for regression, and a
  # regression target of -1 (a value, not "?").
  out["train"][1][0] = [-1, 3, np.nan]
  out["train"][1][1] = [1, -1, -1.0]
  return out


def _build_dir(name, data_dir, **kw):
  return os.fspath(builders.get_builder(name, data_dir, **kw).data_dir)


def _read_all(name, split, data_dir, **kw):
  source = sources.open_split(name, split, data_dir=data_dir, log=None, **kw)
  return source.read(np.arange(len(source)))


def _record_bytes(directory):
  files = sorted(glob.glob(os.path.join(directory, "*.array_record*")))
  assert len(files) == 3, files  # One per split.
  return {os.path.basename(f): open(f, "rb").read() for f in files}


def test_round_trip_through_open_split(tmp_path):
  splits = _splits()
  spec = mtljax.data.register_arrays("my_data", splits=splits, tasks=TASKS)
  assert mtljax.data.register_arrays is arrays.register_arrays
  assert spec == builders.dataset_spec("my_data")
  assert spec.tasks == TASKS and spec.task_names == ("cat", "digit", "age")
  assert spec.image_shape == (5, 4, 3) and spec.split_sizes == SIZES
  assert spec.num_outputs == 12
  for split, (x, y) in splits.items():
    images, labels = _read_all("my_data", split, str(tmp_path))
    assert images.dtype == np.uint8 and labels.dtype == np.float32
    np.testing.assert_array_equal(images, x)
    # assert_array_equal treats NaN == NaN: NaN is checked where NaN.
    np.testing.assert_array_equal(labels, y.astype(np.float32))
    assert np.array_equal(np.isnan(labels), np.isnan(y))
  _, labels = _read_all("my_data", "train", str(tmp_path))
  np.testing.assert_array_equal(labels[:2], np.float32(
      [[-1, 3, np.nan], [1, -1, -1]]))
  # The built-ins' layout: a TFDS GeneratorBasedBuilder writing ArrayRecord.
  builder = builders.get_builder("my_data", str(tmp_path))
  assert isinstance(builder, tfds.core.GeneratorBasedBuilder)
  assert builder.builder_config.name.startswith("h")
  features = builder.info.features
  assert features["image"].np_dtype == np.uint8
  assert features["image"].shape == (5, 4, 3)
  assert features["labels"].np_dtype == np.float32
  assert features["labels"].shape == (3,)
  assert features["index"].np_dtype == np.int64
  assert builder.info.disable_shuffling
  assert {s: builder.info.splits[s].num_examples for s in SIZES} == SIZES
  _record_bytes(builder.data_dir)
  assert os.path.isfile(os.path.join(builder.data_dir,
                                     builders.CHECKSUMS_FILENAME))


def test_three_dim_images_get_one_channel_and_one_task_takes_1d_labels(
    tmp_path):
  rng = np.random.default_rng(1)
  splits = {s: (rng.integers(0, 256, (n, 6, 6), dtype=np.uint8),
                rng.normal(size=n)) for s, n in SIZES.items()}
  spec = mtljax.data.register_arrays("gray", splits, [Regression("y")])
  assert spec.image_shape == (6, 6, 1)
  images, labels = _read_all("gray", "validation", str(tmp_path))
  np.testing.assert_array_equal(images[..., 0], splits["validation"][0])
  np.testing.assert_array_equal(labels[:, 0],
                                splits["validation"][1].astype(np.float32))


def _with(split, images=None, labels=None, every=None):
  """_splits() with one split's images or labels replaced.

  `every`: applied to every split's images first (e.g. to make them float).
  """
  splits = _splits()
  if every is not None:
    splits = {s: (every(x), y) for s, (x, y) in splits.items()}
  x, y = splits[split]
  splits[split] = (x if images is None else images(x),
                   y if labels is None else labels(y))
  return splits


def _set(i, j, value):
  def change(y):
    y = y.copy()
    y[i, j] = value
    return y
  return change


@pytest.mark.parametrize("splits, kw, match", [
    (_with("validation", labels=lambda y: y[:, :2]), {},
     r"split 'validation'.*shape \[N, 3\].*'cat', 'digit', 'age'.*\(3, 2\)"),
    (_with("train", labels=_set(4, 1, 10)), {},
     r"split 'train'.*label value 10 at example 4, task 'digit' "
     r"\(multiclass\) .*\[0, 10\)"),
    (_with("test", labels=_set(1, 1, 2.5)), {},
     r"split 'test'.*label value 2\.5 at example 1, task 'digit'"),
    (_with("validation", labels=_set(2, 0, 0.5)), {},
     r"split 'validation'.*label value 0\.5 at example 2, task 'cat' "
     r"\(binary\) is not 0 or 1"),
    (_with("train", labels=_set(3, 0, 2)), {},
     r"split 'train'.*label value 2 at example 3, task 'cat'"),
    (_with("train", labels=_set(5, 0, -2)), {},
     r"split 'train'.*label value -2 at example 5, task 'cat'.*-1 for '\?'"),
    (_with("test", labels=_set(0, 2, np.inf)), {},
     r"split 'test'.*label value inf at example 0, task 'age' \(regression\)"),
    (_with("test", labels=_set(1, 2, 1e300)), {},
     r"split 'test'.*label value 1e\+300 at example 1, task 'age'.*float32"),
    (_with("train", labels=lambda y: y.astype(str)), {},
     r"split 'train'.*labels must be a numeric"),
    (_with("train", labels=lambda y: y[:6]), {},
     r"split 'train'.*7 images but 6 label rows"),
    (_with("validation", images=lambda x: x[:, :4]), {},
     r"image shape.*differs between splits.*'validation': \(4, 4, 3\)"),
    (_with("test", images=lambda x: x[:0], labels=lambda y: y[:0]), {},
     r"split 'test'.*empty"),
    (_with("train", images=lambda x: x[:, :, :, 0, None, None]), {},
     r"split 'train'.*\[N, H, W, C\].*\(7, 5, 4, 1, 1\)"),
    (_with("train", images=lambda x: x / 255.0), {},
     r"split 'train'.*float64, not uint8.*image_range"),
    (_with("validation", every=lambda x: x / 255.0, images=lambda x: np.where(
        np.arange(3)[:, None, None, None] == 1, 1.5, x)),
     dict(image_range=(0.0, 1.0)),
     r"split 'validation'.*pixel value 1\.5 at example 1 .*\(0\.0, 1\.0\)"),
    (_with("test", every=lambda x: x / 255.0, images=lambda x: np.where(
        np.arange(2)[:, None, None, None] == 1, np.nan, x)),
     dict(image_range=(0.0, 1.0)),
     r"split 'test'.*pixel value nan at example 1"),
    (_with("train", every=lambda x: x.astype(np.int64),
           images=lambda x: np.where(x == x.max(), -1, x)),
     dict(image_range=(0, 255)), r"split 'train'.*pixel value -1 at"),
    # uint8 images are 0..255, outside a declared (0.0, 1.0).
    (_splits(), dict(image_range=(0.0, 1.0)),
     r"split 'train'.*pixel value \d+ at example 0 .*\(0\.0, 1\.0\)"),
    (_splits(), dict(image_range=(1.0, 0.0)), r"image_range.*\(1\.0, 0\.0\)"),
    (_splits(), dict(tasks=[Binary("a"), Binary("a")]), r"repeated.*'a'"),
    (_splits(), dict(tasks=["cat"]), r"Binary/Multiclass/Regression"),
    (_splits(), dict(name="tfds:mnist"), r"dataset name.*'tfds:mnist'"),
    (_splits(), dict(name=""), r"dataset name.*''"),
    ({k: v for k, v in _splits().items() if k != "test"}, {},
     r"missing split\(s\) \['test'\]"),
    (dict(_splits(), val=_splits()["validation"]), {},
     r"unknown split\(s\) \['val'\]"),
    (dict(_splits(), train=_splits()["train"][0]), {},
     r"split 'train'.*pair \(images, labels\)"),
])
def test_invalid_arrays_raise_one_data_error(splits, kw, match, tmp_path):
  kw = dict(dict(name="bad", tasks=TASKS), **kw)
  with pytest.raises(mtljax.data.DataError, match=match):
    mtljax.data.register_arrays(kw.pop("name"), splits, **kw)
  assert "bad" not in registry.DATASETS


def test_failed_registration_keeps_the_previous_one(tmp_path):
  mtljax.data.register_arrays("nb", _splits(), TASKS)
  before = registry.DATASETS.get("nb")
  with pytest.raises(mtljax.data.DataError, match="'digit'"):
    mtljax.data.register_arrays("nb", _with("train", labels=_set(0, 1, 11)),
                                TASKS)
  assert registry.DATASETS.get("nb") is before
  assert not os.listdir(tmp_path)  # Registration writes nothing.


def test_builds_are_keyed_by_content(tmp_path):
  data_dir = str(tmp_path)
  splits = _splits()
  mtljax.data.register_arrays("keyed", splits, TASKS)
  first_dir = _build_dir("keyed", data_dir)
  # The user's arrays changing after registration (before the build) change
  # nothing stored: what is written is what was hashed.
  splits["train"][1][3, 1] = 9 - splits["train"][1][3, 1]
  splits["train"][0][0] ^= 1
  logs = []
  builders.build("keyed", data_dir, log=logs.append)
  assert any(l.startswith("building keyed (first use)") for l in logs)
  assert _build_dir("keyed", data_dir) == first_dir
  images, labels = _read_all("keyed", "train", data_dir)
  np.testing.assert_array_equal(images, _splits()["train"][0])
  np.testing.assert_array_equal(labels, _splits()["train"][1].astype(
      np.float32))
  logs.clear()
  builders.build("keyed", data_dir, log=logs.append)
  assert logs == []

  # One changed label: a new build, which holds the new label.
  changed = _splits()
  changed["train"][1][3, 1] = 9 - changed["train"][1][3, 1]
  mtljax.data.register_arrays("keyed", changed, TASKS)
  new_dir = _build_dir("keyed", data_dir)
  assert new_dir != first_dir
  assert os.path.dirname(new_dir) != os.path.dirname(first_dir)  # config
  logs.clear()
  _, labels = _read_all("keyed", "train", data_dir)
  sources.open_split("keyed", "train", data_dir=data_dir, log=logs.append)
  assert logs == []  # open_split above built it.
  np.testing.assert_array_equal(labels, changed["train"][1].astype(
      np.float32))
  assert labels[3, 1] != _splits()["train"][1][3, 1]

  # The original content again: its build is found, nothing is rebuilt.
  mtljax.data.register_arrays("keyed", _splits(), TASKS)
  assert _build_dir("keyed", data_dir) == first_dir
  logs.clear()
  source = sources.open_split("keyed", "train", data_dir=data_dir,
                              log=logs.append)
  assert not [l for l in logs if "building" in l]
  np.testing.assert_array_equal(source.read([3])[1],
                                _splits()["train"][1][3:4].astype(np.float32))


@pytest.mark.parametrize("change", [
    lambda s: s["test"][0].__setitem__((1, 2, 3, 0), s["test"][0][1, 2, 3, 0]
                                       ^ 0x80),
    lambda s: s["validation"][1].__setitem__((2, 2), 0.25),
])
def test_any_change_of_the_content_changes_the_config(change):
  base = mtljax.data.register_arrays("h", _splits(), TASKS)
  config = registry.DATASETS.get("h").config
  assert registry.DATASETS.get(base.name).config == config
  changed = _splits()
  change(changed)
  mtljax.data.register_arrays("h", changed, TASKS)
  assert registry.DATASETS.get("h").config != config
  # Same content, same config.
  mtljax.data.register_arrays("h", _splits(), TASKS)
  assert registry.DATASETS.get("h").config == config


def test_how_a_nan_was_made_does_not_change_the_key(tmp_path):
  def config(nan):
    splits = _splits()
    splits["train"][1][0] = [-1, 2, nan]
    mtljax.data.register_arrays("n", splits, TASKS)
    return registry.DATASETS.get("n").config
  negative = -np.float64(np.nan)
  assert np.signbit(negative)
  assert config(negative) == config(np.nan)
  _, labels = _read_all("n", "train", str(tmp_path))
  assert not np.signbit(labels[0, 2:]).any()


def test_the_tasks_and_image_range_are_part_of_the_key():
  def config(tasks=TASKS, **kw):
    mtljax.data.register_arrays("k", _splits(), tasks, **kw)
    return registry.DATASETS.get("k").config
  base = config()
  assert config(tasks=(TASKS[0], Multiclass("digit", num_classes=11),
                       TASKS[2])) != base
  assert config(tasks=(TASKS[0], TASKS[1], Regression("age", "huber"))) != (
      base)
  assert config(tasks=(Binary("dog"),) + TASKS[1:]) != base
  assert config(image_range=(0, 255)) != base
  assert config() == base


def test_float_and_integer_images_with_image_range(tmp_path):
  rng = np.random.default_rng(2)
  want = {s: rng.integers(0, 256, (n, 3, 3, 3), dtype=np.uint8)
          for s, n in SIZES.items()}
  labels = {s: _splits()[s][1] for s in SIZES}
  cases = [
      ((0.0, 1.0), lambda u: u.astype(np.float32) / np.float32(255)),
      ((0, 255), lambda u: u.astype(np.float64)),
      ((0, 255), lambda u: u.astype(np.int64)),
      ((-1.0, 1.0), lambda u: u / 127.5 - 1.0),
      # Rounded, not truncated: 10.4 -> 10, 10.6 -> 11.
      ((0, 255), lambda u: u + np.where(u % 2 == 0, 0.4, -0.4)),
  ]
  for k, (image_range, to_input) in enumerate(cases):
    name = f"float{k}"
    mtljax.data.register_arrays(
        name, {s: (to_input(want[s]), labels[s]) for s in SIZES}, TASKS,
        image_range=image_range)
    for s in SIZES:
      images, _ = _read_all(name, s, str(tmp_path))
      np.testing.assert_array_equal(images, want[s], err_msg=name)
  # (0.0, 1.0) maps 0.5 to round(127.5) = 128 (half to even), 0.25 to 64.
  half = {s: (np.full((n, 1, 1, 1), v), np.zeros((n, 1)))
          for (s, n), v in zip(SIZES.items(), (0.5, 0.25, 1.0))}
  mtljax.data.register_arrays("half", half, [Binary("b")],
                              image_range=(0.0, 1.0))
  got = [_read_all("half", s, str(tmp_path))[0].ravel()[0] for s in SIZES]
  assert got == [128, 64, 255]


def test_reregistering_a_name_replaces_it(tmp_path):
  # pylint: disable=protected-access
  mtljax.data.register_arrays("nb", _splits(), TASKS)
  old = registry.DATASETS.get("nb").builder.CONTENT_HASH
  assert old in arrays._STORE
  rng = np.random.default_rng(3)
  other = {s: (rng.integers(0, 256, (n + 1, 2, 2, 1), dtype=np.uint8),
               rng.integers(0, 2, (n + 1, 1))) for s, n in SIZES.items()}
  spec = mtljax.data.register_arrays("nb", other, [Binary("dog")])
  assert builders.dataset_spec("nb") == spec
  assert spec.task_names == ("dog",) and spec.image_shape == (2, 2, 1)
  assert spec.split_sizes == {s: n + 1 for s, n in SIZES.items()}
  assert builders.dataset_names().count("nb") == 1
  images, labels = _read_all("nb", "test", str(tmp_path))
  np.testing.assert_array_equal(images, other["test"][0])
  np.testing.assert_array_equal(labels, other["test"][1].astype(np.float32))
  # The replaced arrays are no longer held.
  assert old not in arrays._STORE
  assert registry.DATASETS.get("nb").builder.CONTENT_HASH in arrays._STORE


@pytest.mark.parametrize("name", ["mtl_scenes", "mtl_scenes/default",
                                  "mtl_scenes/unrelated",
                                  "digits_multilabel"])
def test_a_builtin_name_is_refused(name):
  before = {n: registry.DATASETS.get(n) for n in registry.DATASETS.names()}
  with pytest.raises(mtljax.data.DataError,
                     match=f"{name!r}.*not registered from arrays"):
    mtljax.data.register_arrays(name, _splits(), TASKS)
  after = {n: registry.DATASETS.get(n) for n in registry.DATASETS.names()}
  assert after == before
  assert builders.get_builder("mtl_scenes").__class__ is builders.MtlScenes


def test_a_rebuild_is_byte_identical(tmp_path):
  mtljax.data.register_arrays("same", _splits(), TASKS)
  dirs = []
  for sub in ("a", "b"):
    builders.build("same", str(tmp_path / sub), log=None)
    dirs.append(_build_dir("same", str(tmp_path / sub)))
  assert os.path.relpath(dirs[0], tmp_path / "a") == os.path.relpath(
      dirs[1], tmp_path / "b")
  first, second = (_record_bytes(d) for d in dirs)
  assert first == second
  sums = [json.load(open(os.path.join(d, builders.CHECKSUMS_FILENAME)))
          for d in dirs]
  assert sums[0] == sums[1]


def test_split_sizes_are_fixed(tmp_path):
  mtljax.data.register_arrays("fixed", _splits(), TASKS)
  assert builders.dataset_spec("fixed", (7, 3, 2)).split_sizes == SIZES
  assert builders.dataset_spec("fixed", {"test": 2}).split_sizes == SIZES
  assert builders.dataset_spec("fixed", ()).split_sizes == SIZES
  with pytest.raises(mtljax.data.DataError,
                     match=r"'fixed' has fixed split sizes.*'train': 7.*"
                     r"\(4, 3, 2\)"):
    builders.dataset_spec("fixed", (4, 3, 2))
  with pytest.raises(mtljax.data.DataError, match="fixed split sizes"):
    sources.open_split("fixed", "train", data_dir=str(tmp_path),
                       split_sizes={"validation": 1}, log=None)
  assert not os.listdir(tmp_path)


def test_missing_rate_hides_labels_as_question_marks(tmp_path):
  rng = np.random.default_rng(4)
  splits = {s: (rng.integers(0, 256, (400, 2, 2, 1), dtype=np.uint8),
                np.stack([rng.integers(0, 2, 400), rng.integers(0, 10, 400),
                          rng.normal(size=400)], axis=1))
            for s in SIZES}
  mtljax.data.register_arrays("hidden", splits, TASKS)
  full = _read_all("hidden", "train", str(tmp_path))[1]
  hidden = _read_all("hidden", "train", str(tmp_path), missing_rate=0.5)[1]
  assert _read_all("hidden", "train", str(tmp_path / "again"),
                   missing_rate=0.5)[1].tobytes() == hidden.tobytes()
  cls_missing = hidden[:, :2] == -1
  reg_missing = np.isnan(hidden[:, 2])
  assert 0.4 < cls_missing.mean() < 0.6 and 0.4 < reg_missing.mean() < 0.6
  np.testing.assert_array_equal(hidden[:, :2][~cls_missing],
                                full[:, :2][~cls_missing])
  np.testing.assert_array_equal(hidden[:, 2][~reg_missing],
                                full[:, 2][~reg_missing])
