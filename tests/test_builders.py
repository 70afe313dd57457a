"""TFDS builders and renderers: builds, determinism, label rates, pools."""

import glob
import os

import numpy as np
import pytest

from mtljax import data
from mtljax.data import builders
from mtljax.data import digits
from mtljax.data import scenes


def _concat(chunks):
  images, labels = zip(*chunks)
  return np.concatenate(images), np.concatenate(labels)


def test_tiny_builds_are_array_record_and_logged_once(tiny_data):
  assert [l for l in tiny_data.logs if "(first use)" in l] == [
      l for l in tiny_data.logs if l.startswith("building ")]
  assert any(l.startswith("building mtl_scenes (first use)")
             for l in tiny_data.logs)
  assert any(l.startswith("building digits_multilabel (first use)")
             for l in tiny_data.logs)
  for name in ("mtl_scenes", "digits_multilabel"):
    assert data.is_built(name, tiny_data.data_dir, tiny_data.split_sizes)
    files = glob.glob(os.path.join(tiny_data.data_dir, name, "*", "*",
                                   "*.array_record*"))
    assert len(files) == 3, files  # one per split
  # A second build finds the data and says nothing.
  logs = []
  spec = data.build("mtl_scenes", tiny_data.data_dir, tiny_data.split_sizes,
                    log=logs.append)
  assert logs == []
  assert spec.split_sizes == {"train": 2000, "validation": 500, "test": 500}
  # Other sizes are a different build.
  assert not data.is_built("mtl_scenes", tiny_data.data_dir, (2000, 500, 499))
  assert not data.is_built("mtl_scenes/unrelated", tiny_data.data_dir,
                           tiny_data.split_sizes)


def test_stored_data_is_the_generators_output_in_order(tiny_data):
  d = data.load_split("mtl_scenes", "validation", tiny_data.data_dir,
                      tiny_data.split_sizes)
  images, labels = _concat(scenes.generate_split(
      builders.DATA_SEED, "validation", 500, "shared"))
  np.testing.assert_array_equal(d["image"], images)
  np.testing.assert_array_equal(d["labels"], labels)
  d = data.load_split("digits_multilabel", "test", tiny_data.data_dir,
                      tiny_data.split_sizes)
  images, labels = _concat(digits.generate_split(builders.DATA_SEED, "test",
                                                 500))
  np.testing.assert_array_equal(d["image"], images)
  np.testing.assert_array_equal(d["labels"], labels)


@pytest.mark.parametrize("gen", [
    lambda seed, n: scenes.generate_split(seed, "train", n, "shared"),
    lambda seed, n: scenes.generate_split(seed, "train", n, "unrelated"),
    lambda seed, n: digits.generate_split(seed, "train", n),
])
def test_generators_are_deterministic_and_prefix_stable(gen):
  a_img, a_lab = _concat(gen(0, 1200))
  b_img, b_lab = _concat(gen(0, 1500))
  np.testing.assert_array_equal(a_img, b_img[:1200])
  np.testing.assert_array_equal(a_lab, b_lab[:1200])
  c_img, _ = _concat(gen(1, 1200))
  assert (c_img != a_img).mean() > 0.3
  # Splits differ from each other too (split id is part of the stream).
  assert not np.array_equal(a_img[:10], b_img[1000:1010])


@pytest.mark.parametrize("mode", ["shared", "unrelated"])
def test_scene_label_rates_match_object_prob(mode):
  params = scenes.SceneParams()
  images, labels = _concat(scenes.generate_split(7, "test", 2000, mode,
                                                 params))
  assert images.shape == (2000, 32, 32, 3) and images.dtype == np.uint8
  assert labels.dtype == np.int8 and set(np.unique(labels)) == {0, 1}
  # std of a rate over 2000 examples is ~0.011.
  np.testing.assert_allclose(labels.mean(0), params.object_prob, atol=0.04)
  # Tasks are drawn independently.
  corr = np.corrcoef(labels.T.astype(float))[np.triu_indices(4, 1)]
  assert np.abs(corr).max() < 0.1


def test_digit_label_rates_match_the_pool_and_digit_count():
  images, labels = _concat(digits.generate_split(3, "train", 3000))
  assert images.shape == (3000, 24, 24, 1) and images.dtype == np.uint8
  counts = labels.sum(1)
  assert counts.min() >= 1 and counts.max() <= 3
  _, targets = digits.source_pools()["train"]
  p = np.bincount(targets, minlength=10) / len(targets)
  # 1-3 digits drawn uniformly with replacement: P(d present) = E_k[1-(1-p)^k].
  expected = np.mean([1 - (1 - p) ** k for k in (1, 2, 3)], axis=0)
  np.testing.assert_allclose(labels.mean(0), expected, atol=0.03)


def test_digit_source_pools_partition_the_images_with_no_shared_pixels():
  pools = digits.source_pools()
  keys = {s: {img.tobytes() for img in pools[s][0]} for s in pools}
  sizes = {s: len(pools[s][0]) for s in pools}
  assert sizes == {"train": 1078, "validation": 359, "test": 360}
  assert all(len(keys[s]) == sizes[s] for s in pools)  # no duplicates within
  assert not keys["train"] & keys["test"]
  assert not keys["train"] & keys["validation"]
  assert not keys["validation"] & keys["test"]
  all_images, _ = digits._all_sources()  # pylint: disable=protected-access
  assert keys["train"] | keys["validation"] | keys["test"] == {
      img.tobytes() for img in all_images}


def test_canvases_only_use_their_splits_pool(monkeypatch):
  pools = dict(digits.source_pools())
  # Make each split's pool a single class: a canvas's labels then reveal
  # which pool its digits came from.
  for split, digit in (("train", 1), ("validation", 4), ("test", 7)):
    images, targets = pools[split]
    keep = targets == digit
    pools[split] = (images[keep], targets[keep])
  monkeypatch.setattr(digits, "source_pools", lambda: pools)
  for split, digit in (("train", 1), ("validation", 4), ("test", 7)):
    _, labels = _concat(digits.generate_split(0, split, 300))
    assert labels[:, digit].all() and labels.sum() == 300, split


def test_missing_rate_writes_minus_one(tmp_path):
  logs = []
  data.build("digits_multilabel", str(tmp_path), (1000, 200, 200),
             log=logs.append, missing_rate=0.3)
  assert "missing0p3" in logs[0]
  stored = data.load_split("digits_multilabel", "train", str(tmp_path),
                           (1000, 200, 200), missing_rate=0.3)["labels"]
  _, full = _concat(digits.generate_split(builders.DATA_SEED, "train", 1000))
  missing = stored == -1
  assert abs(missing.mean() - 0.3) < 0.03
  np.testing.assert_array_equal(stored[~missing], full[~missing])


def test_dataset_spec_needs_no_build(tmp_path):
  for name in data.DATASET_NAMES:
    spec = data.dataset_spec(name)
    assert spec.name == name and len(spec.task_names) == spec.num_tasks
    # The spec and the builder's default config agree on the sizes.
    config = builders.get_builder(name, str(tmp_path)).builder_config
    assert config.split_sizes == tuple(spec.split_sizes.values())
  assert data.dataset_spec("mtl_scenes/large").image_shape == (64, 64, 3)
  assert data.dataset_spec("digits_multilabel").image_shape == (24, 24, 1)
  assert data.dataset_spec("digits_multilabel").num_tasks == 10
  assert data.dataset_spec("mtl_scenes").split_sizes == {
      "train": 50000, "validation": 5000, "test": 10000}
  assert data.dataset_spec("mtl_scenes/default", {"test": 7}).split_sizes == {
      "train": 50000, "validation": 5000, "test": 7}
  assert data.dataset_spec("mtl_scenes", ()).split_sizes["train"] == 50000
  assert not os.listdir(tmp_path)  # nothing was built


def test_resolve_data_dir_precedence(monkeypatch, tmp_path):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
  assert data.resolve_data_dir(str(tmp_path / "arg")) == str(tmp_path / "arg")
  assert data.resolve_data_dir() == str(tmp_path / "env")
  assert data.resolve_data_dir("") == str(tmp_path / "env")
  monkeypatch.delenv("TFDS_DATA_DIR")
  assert data.resolve_data_dir() == os.path.expanduser("~/tensorflow_datasets")


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="mtl_scene"), r"'mtl_scene'.*mtl_scenes/unrelated"),
    (dict(name="mtl_scenes/huge"), r"'mtl_scenes/huge'.*digits_multilabel"),
    (dict(name="mtl_scenes", split_sizes=(10, 0, 5)), r"'validation'.*got 0"),
    (dict(name="mtl_scenes", split_sizes=(10, 5)), r"\(10, 5\)"),
    (dict(name="mtl_scenes", split_sizes={"val": 5}), "'val'"),
    (dict(name="mtl_scenes", split_sizes=(10, 2.5, 5)), "2.5"),
    (dict(name="mtl_scenes", missing_rate=1.0), "missing_rate.*1.0"),
])
def test_bad_names_and_sizes_raise_data_error(kwargs, match, tmp_path):
  with pytest.raises(data.DataError, match=match):
    data.build(data_dir=str(tmp_path), log=None, **kwargs)
  assert not os.listdir(tmp_path)  # nothing was written


def test_unusable_data_dir_raises_data_error_naming_the_path(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  with pytest.raises(data.DataError, match="a_file"):
    data.build("digits_multilabel", str(blocker), (1000, 200, 200), log=None)
  with pytest.raises(data.DataError, match="a_file"):
    data.build("digits_multilabel", str(blocker / "sub"), (1000, 200, 200),
               log=None)
  assert issubclass(data.DataError, ValueError)
