"""`tfds:<name>` datasets (`mtljax.data.tfds_source`), all offline.

Two kinds of data, neither needing TensorFlow or a download:
  * `tfds.testing.mock_data(policy=USE_CODE)` for real TFDS catalog builders
    (celeb_a, mnist): their features come from the TFDS code; the examples
    are random but a pure function of the record index (the same in every
    split and on every call), and every split has `num_examples` records.
  * a tiny builder of our own (`ToyAttrs`), really prepared as ArrayRecord
    in a temporary data dir, for exact values, split slicing, split sizes
    from the dataset info, missing labels and bad labels.
"""

import contextlib
import inspect
import re
import sys

from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking

from mtljax.data import sources
from mtljax.data import testing
from mtljax.data import tfds_source
from mtljax.data.builders import DataError

CELEB = {"tasks": {"attributes/*": "binary"}, "resize": (64, 64)}


mock_tfds = testing.mock_tfds


# ---------------------------------------------------------------------------
# A real (tiny) prepared ArrayRecord dataset.

TOY = "mtljax_test_toy_attrs"
TRAIN, TEST = 20, 10


class MtljaxTestToyAttrs(tfds.core.GeneratorBasedBuilder):
  """Deterministic examples; record k of a split is its k-th example."""

  VERSION = tfds.core.Version("1.0.0")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):  # pylint: disable=no-self-argument
    return epath.Path(inspect.getfile(cls))

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(12, 10, 3), dtype=np.uint8),
            "picture": tfds.features.Image(shape=(6, 5, 3),
                                           encoding_format="png"),
            "photo": tfds.features.Tensor(
                shape=(None, None, 3), dtype=np.uint8,
                encoding=tfds.features.Encoding.ZLIB),
            "attrs": {"a": np.bool_, "b": np.bool_},
            "label": tfds.features.ClassLabel(num_classes=3),
            "score": np.float32,
            "count": np.int64,
            "big": np.int64,
            "name": tfds.features.Text(),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(0, TRAIN),
            "test": self._generate_examples(100, TEST)}

  def _generate_examples(self, start, n):
    for i in range(start, start + n):
      yield i, toy_example(i)


def toy_picture(i):
  return (np.arange(6 * 5 * 3).reshape(6, 5, 3) * 3 + i).astype(np.uint8)


def toy_example(i):
  return {"image": np.full((12, 10, 3), i, np.uint8),
          # Encoded as PNG by PIL (an array would need TensorFlow).
          "picture": PIL.Image.fromarray(toy_picture(i)),
          "photo": np.full((6 + i % 5, 8, 3), i, np.uint8),
          "attrs": {"a": i % 2 == 0, "b": i % 3 == 0},
          "label": i % 3,
          "score": np.nan if i == 3 else i / 10,
          "count": -1 if i == 4 else i % 2,
          "big": i,
          "name": f"x{i}"}


TOY_TASKS = {"attrs/*": "binary", "label": "multiclass", "score": "regression",
             "count": "binary"}
TOY_SPLITS = {"train": "train[:15]", "validation": "train[15:]",
              "test": "test"}


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("tfds_toy"))
  builder = tfds.builder(TOY, data_dir=root, file_format="array_record")
  builder.download_and_prepare(file_format="array_record")
  return root


def toy_options(**kw):
  return {"tasks": TOY_TASKS, "splits": TOY_SPLITS, **kw}


# ---------------------------------------------------------------------------
# celeb_a and mnist under tfds.testing.mock_data.


def test_celeb_a_spec():
  with mock_tfds(num_examples=4):
    spec = sources.dataset_spec("tfds:celeb_a", tfds_options=CELEB)
    versioned = sources.dataset_spec("tfds:celeb_a:2.1.0", tfds_options=CELEB)
  assert spec.name == "tfds:celeb_a"
  assert versioned.name == "tfds:celeb_a:2.1.0"
  assert spec.num_tasks == 40 and spec.num_outputs == 40
  assert set(spec.task_types) == {"binary"}
  assert spec.task_names == tuple(sorted(spec.task_names))
  assert all(n.startswith("attributes/") for n in spec.task_names)
  assert "attributes/Smiling" in spec.task_names
  assert spec.image_shape == (64, 64, 3)
  # Unprepared under the mock: every split has num_examples records.
  assert spec.split_sizes == {"train": 4, "validation": 4, "test": 4}
  assert versioned.task_names == spec.task_names


def test_celeb_a_read():
  with mock_tfds(num_examples=5):
    source = sources.open_split("tfds:celeb_a", "train", tfds_options=CELEB)
    test = sources.open_split("tfds:celeb_a", "test", tfds_options=CELEB)
    plain = sources.open_split("tfds:celeb_a", "train",
                               tfds_options={"tasks": CELEB["tasks"]})
    raw = tfds.data_source("celeb_a", split="train", download=False)
    images, labels = source.read(np.array([3, 0, 3]))
    again, again_labels = source.read([0])
    test_images, _ = test.read([0])
    full, full_labels = plain.read([0, 4])
    record = raw[0]
    empty_images, empty_labels = source.read(np.zeros((0,), np.int64))
  assert len(source) == 5 and "train" in source.where
  assert images.shape == (3, 64, 64, 3) and images.dtype == np.uint8
  assert labels.shape == (3, 40) and labels.dtype == np.float32
  assert set(np.unique(labels)) <= {0.0, 1.0}
  # The mock is a pure function of the index: repeats, later calls and
  # other splits give the same example.
  np.testing.assert_array_equal(images[0], images[2])
  np.testing.assert_array_equal(images[1], again[0])
  np.testing.assert_array_equal(labels[1], again_labels[0])
  np.testing.assert_array_equal(test_images[0], again[0])
  assert not np.array_equal(images[0], images[1])
  # No resize: the stored image; labels are the booleans in sorted order.
  assert full.shape == (2, 218, 178, 3)
  np.testing.assert_array_equal(full[0], record["image"])
  names = sorted(record["attributes"])
  np.testing.assert_array_equal(
      full_labels[0], [float(record["attributes"][n]) for n in names])
  np.testing.assert_array_equal(again, tfds_source.resize_images(
      record["image"][None], (64, 64)))
  assert empty_images.shape == (0, 64, 64, 3) and empty_labels.shape == (0, 40)
  with pytest.raises(IndexError, match="out of range"):
    source.read([5])
  assert "tensorflow" not in sys.modules  # Read without TensorFlow.


def test_mnist_multiclass():
  with mock_tfds(num_examples=6):
    source = sources.open_split("tfds:mnist", "validation",
                                tfds_options={"tasks": {"label": "multiclass"}})
    images, labels = source.read(np.arange(6))
  (task,) = source.spec.tasks
  assert (task.name, task.type, task.num_classes) == ("label", "multiclass", 10)
  assert source.spec.image_shape == (28, 28, 1)
  assert images.shape == (6, 28, 28, 1)
  assert labels.shape == (6, 1)
  assert np.all((labels >= 0) & (labels < 10) & (labels == np.floor(labels)))


def test_options_forms():
  with mock_tfds():
    a = sources.dataset_spec(
        "tfds:celeb_a", tfds_options={"tasks": "attributes/S*=binary,"
                                               "attributes/Young=binary"})
    cfg = ml_collections.ConfigDict()
    cfg.tasks = ml_collections.ConfigDict()
    cfg.tasks["attributes/S*"] = "binary"
    cfg.tasks["attributes/Young"] = {"type": "binary"}
    cfg.resize = 32
    b = sources.dataset_spec("tfds:celeb_a", tfds_options=cfg)
    c = sources.dataset_spec(  # Pairs, as config.data.tfds holds them.
        "tfds:celeb_a", tfds_options={
            "tasks": (("attributes/S*", "binary"),
                      ("attributes/Young", "binary")),
            "splits": (("validation", "train[:1%]"),)})
  want = ("attributes/Sideburns", "attributes/Smiling",
          "attributes/Straight_Hair", "attributes/Young")
  assert a.task_names == b.task_names == c.task_names == want
  assert b.image_shape == (32, 32, 3)


@pytest.mark.parametrize("options, match", [
    ({"tasks": {"attributes/Smilin": "binary"}},
     r"'attributes/Smilin' matches no feature; available feature paths: .*"
     r"attributes/Smiling \(bool\).*image \(Image"),
    ({"tasks": {"*": "binary"}}, "matches the image feature 'image'"),
    ({"tasks": {"attributes/*": "binary", "attributes/Smiling": "binary"}},
     "'attributes/Smiling' is matched by two patterns"),
    ({"tasks": {"attributes/Smiling": "multiclass"}},
     r"feature attributes/Smiling \(bool\) cannot be a multiclass task"),
    ({"tasks": {"attributes/Smiling": "regression"}},
     r"attributes/Smiling \(bool\) cannot be a regression task"),
    ({"tasks": {"identity/Identity_No": "multiclass"}},
     "needs a ClassLabel feature"),
    ({"tasks": {"landmarks/*": "ranking"}}, "task type must be one of"),
    ({"tasks": {}}, "set data.tfds.tasks.*available feature paths"),
    ({"tasks": {"attributes/*": "binary"}, "colour": 1},
     r"unknown keys \['colour'\]"),
    ({"tasks": {"attributes/*": "binary"}, "resize": (64,)},
     "resize must be"),
    ({"tasks": {"attributes/*": "binary"}, "splits": {"dev": "train"}},
     "unknown split 'dev'"),
    ({"tasks": {"attributes/*": "binary"}, "image": "picture"},
     "no image feature 'picture'"),
    ({"tasks": {"attributes/*": "binary"}, "image": "attributes/Smiling"},
     "is not a uint8 image"),
])
def test_option_errors(options, match):
  with mock_tfds(), pytest.raises(DataError, match=match):
    sources.dataset_spec("tfds:celeb_a", tfds_options=options)


def test_bad_label_value_names_task():
  # The mock's integers are 0..254: not class indices below 10.
  options = {"tasks": {"identity/Identity_No": {"type": "multiclass",
                                                 "num_classes": 10}}}
  with mock_tfds(num_examples=8):
    source = sources.open_split("tfds:celeb_a", "train", tfds_options=options)
    assert source.spec.tasks[0].num_classes == 10
    with pytest.raises(DataError) as e:
      source.read(np.arange(8))
  # (The wording is `types.check_labels`'s; these are its parts.)
  for part in ("'identity/Identity_No' (multiclass)", "at example ",
               "not a class index in [0, 10)", "split 'train'"):
    assert part in str(e.value)


def test_split_sizes_rejected():
  with mock_tfds(), pytest.raises(DataError, match="split sizes are its own"):
    sources.dataset_spec("tfds:celeb_a", (100, 10, 10), tfds_options=CELEB)
  with mock_tfds():  # () and None mean "the dataset's own".
    sources.dataset_spec("tfds:celeb_a", (), tfds_options=CELEB)


# ---------------------------------------------------------------------------
# Not prepared, unknown.


def test_not_prepared(tmp_path):
  with pytest.raises(DataError) as e:
    sources.open_split("tfds:celeb_a", "train", tfds_options=CELEB,
                       data_dir=str(tmp_path))
  msg = str(e.value)
  assert f"'celeb_a' is not prepared in data dir '{tmp_path}'" in msg
  assert "pip install tensorflow tensorflow-datasets" in msg
  assert (f"tfds build celeb_a --file_format=array_record --data_dir "
          f"{tmp_path}") in msg
  assert 'download_and_prepare(file_format="array_record")' in msg
  assert "config.data.data_dir" in msg and "TFDS_DATA_DIR" in msg
  with pytest.raises(DataError, match="not prepared"):
    sources.dataset_spec("tfds:celeb_a", tfds_options=CELEB,
                         data_dir=str(tmp_path))


def test_unknown_dataset(tmp_path):
  with pytest.raises(DataError, match="unknown TFDS dataset 'no_such_set'"):
    sources.dataset_spec("tfds:no_such_set", tfds_options=CELEB,
                         data_dir=str(tmp_path))
  with pytest.raises(DataError, match="only: 2.1.0"):
    sources.dataset_spec("tfds:celeb_a:9.9.9", tfds_options=CELEB,
                         data_dir=str(tmp_path))
  with pytest.raises(DataError, match="looks like 'tfds:celeb_a'"):
    sources.dataset_spec("tfds:", tfds_options=CELEB)


# ---------------------------------------------------------------------------
# A real prepared ArrayRecord dataset.


def test_toy_spec(toy_dir):
  spec = sources.dataset_spec(f"tfds:{TOY}:1.0.0", tfds_options=toy_options(),
                              data_dir=toy_dir)
  assert spec.task_names == ("attrs/a", "attrs/b", "count", "label", "score")
  assert spec.task_types == ("binary", "binary", "binary", "multiclass",
                             "regression")
  assert spec.tasks[3].num_classes == 3
  assert spec.image_shape == (12, 10, 3)
  assert spec.split_sizes == {"train": 15, "validation": 5, "test": TEST}


def test_toy_read_values(toy_dir):
  source = sources.open_split(f"tfds:{TOY}", "train", data_dir=toy_dir,
                              tfds_options=toy_options())
  val = sources.open_split(f"tfds:{TOY}", "validation", data_dir=toy_dir,
                           tfds_options=toy_options())
  # Example 4's binary "count" is -1: refused, not read as "?" (a TFDS
  # feature coded -1/+1 is likelier than one with missing values).
  with pytest.raises(DataError, match=r"feature 'count' of example 4 is -1"):
    source.read(np.array([3, 4]))
  idx = np.array([1, 3, 0, 1])
  images, labels = source.read(idx)
  for row, i in zip(labels, idx):
    ex = toy_example(int(i))
    want = [ex["attrs"]["a"], ex["attrs"]["b"], ex["count"], ex["label"],
            ex["score"]]
    np.testing.assert_array_equal(row, np.array(want, np.float32))
    np.testing.assert_array_equal(images[list(idx).index(i)],
                                  ex["image"])
  assert np.isnan(labels[1, 4])              # score NaN: "?".
  v_images, v_labels = val.read([0])         # "train[15:]": example 15.
  np.testing.assert_array_equal(v_images[0], toy_example(15)["image"])
  assert v_labels[0, 3] == 15 % 3
  assert "'train[15:]'" in val.where


def test_toy_resize_variable_sizes(toy_dir):
  options = toy_options(image="photo", resize=(4, 6))
  source = sources.open_split(f"tfds:{TOY}", "test", data_dir=toy_dir,
                              tfds_options=options)
  images, _ = source.read(np.arange(TEST))
  assert source.spec.image_shape == (4, 6, 3)
  assert images.shape == (TEST, 4, 6, 3)
  for k in range(TEST):                     # Constant images stay constant.
    assert np.all(images[k] == 100 + k)
  with pytest.raises(DataError, match="vary in size; set data.tfds.resize"):
    sources.dataset_spec(f"tfds:{TOY}", data_dir=toy_dir,
                         tfds_options=toy_options(image="photo"))


def test_toy_missing_split_and_bad_values(toy_dir):
  with pytest.raises(DataError, match=r"no split 'validation' for our "
                     r"'validation' split.*its splits: \['test', 'train'\]"):
    sources.dataset_spec(f"tfds:{TOY}", data_dir=toy_dir,
                         tfds_options={"tasks": TOY_TASKS})
  source = sources.open_split(f"tfds:{TOY}", "train", data_dir=toy_dir,
                              tfds_options=toy_options(tasks={"big": "binary"}))
  source.read([0, 1])
  with pytest.raises(DataError) as e:
    source.read([0, 1, 2, 3])
  for part in ("'big' (binary)", "example 2", "not 0 or 1", "'train[:15]'"):
    assert part in str(e.value)
  assert re.search(r"(value|label) 2(\.0)?\b", str(e.value))
  with pytest.raises(DataError, match=r"name \(Text"):
    sources.dataset_spec(f"tfds:{TOY}", data_dir=toy_dir,
                         tfds_options=toy_options(tasks={"name": "binary"}))


def test_resize_matches_jax():
  rng = np.random.default_rng(0)
  for (h, w), size in [((218, 178), (64, 64)), ((28, 28), (56, 40)),
                       ((9, 7), (3, 11))]:
    x = rng.integers(0, 256, (2, h, w, 4)).astype(np.uint8)
    want = jax.image.resize(jnp.asarray(x, jnp.float32), (2,) + size + (4,),
                            "linear", antialias=True)
    want = np.clip(np.rint(np.asarray(want)), 0, 255)
    for c in (1, 3, 4):  # Channels are independent: one reference for all.
      got = tfds_source.resize_images(x[..., :c], size)
      assert got.shape == (2,) + size + (c,) and got.dtype == np.uint8
      assert np.abs(got.astype(np.float64) - want[..., :c]).max() <= 1


def test_toy_image_feature_and_label_scan(toy_dir):
  source = sources.open_split(f"tfds:{TOY}", "test", data_dir=toy_dir,
                              tfds_options=toy_options(image="picture"))
  assert source.spec.image_shape == (6, 5, 3)
  idx = np.array([2, 0, 7])
  images, labels = source.read(idx)
  for image, i in zip(images, idx):
    np.testing.assert_array_equal(image, toy_picture(100 + int(i)))
  np.testing.assert_array_equal(source.read_labels(idx), labels)
  # The label scan decodes no image.
  with mocking.mock.patch.object(tfds.features.Image, "decode_example_np",
                                 side_effect=AssertionError("decoded")):
    np.testing.assert_array_equal(source.read_labels(idx), labels)
    with pytest.raises(DataError, match="AssertionError: decoded"):
      source.read(idx)
  assert source.read_labels([]).shape == (0, 5)


def test_read_labels_under_mock():
  with mock_tfds(num_examples=4):
    source = sources.open_split("tfds:celeb_a", "train", tfds_options=CELEB)
    _, labels = source.read([1, 2])
    np.testing.assert_array_equal(source.read_labels([1, 2]), labels)


# ---------------------------------------------------------------------------
# End to end: CelebA under mock_data trains through the CLI.


@pytest.mark.slow
def test_celeb_a_trains_through_the_cli_under_mock_data(tmp_path, monkeypatch):
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from mtljax import cli  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(cli, "_setup_logging", lambda verbose=False: None)
  monkeypatch.setenv("MTLJAX_COMPILATION_CACHE", "")
  config = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                        "experiments", "celeb_a.py")
  wd = tmp_path / "w"
  with mock_tfds(num_examples=64):
    assert cli.main(["train", "--config", f"{config}:smoke", "--workdir",
                     str(wd), "--config.train.progress=none",
                     "--config.data.in_memory=never",
                     f"--config.data.data_dir={tmp_path / 'tfds'}"]) == 0
  with open(wd / "results.json") as f:
    results = json.load(f)
  assert results["dataset"]["name"] == "tfds:celeb_a"
  names = results["dataset"]["task_names"]
  assert len(names) == 40 and names[0].startswith("attributes/")
  assert {r["arm"] for r in results["runs"]} == {"mtl", "stl"}
  mtl = next(r for r in results["runs"] if r["arm"] == "mtl")
  assert set(mtl["test"]["per_task"]) == set(names)
  assert np.isfinite(mtl["test"]["mean"]["loss"])


@pytest.mark.slow
def test_e8_celeb_a9_grouping_trains_under_mock_data(tmp_path, monkeypatch):
  # TAG's benchmark config: its nine attributes, the 1- and 2-task groups and
  # the lookahead affinity, through the CLI; the report's grouping section.
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from mtljax import cli  # pylint: disable=g-import-not-at-top
  from mtljax.analysis import report  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(cli, "_setup_logging", lambda verbose=False: None)
  monkeypatch.setenv("MTLJAX_COMPILATION_CACHE", "")
  config = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                        "experiments", "e8_grouping.py")
  wd = tmp_path / "w"
  with mock_tfds(num_examples=64):
    assert cli.main(["train", "--config", f"{config}:smoke,celeb_a9",
                     "--workdir", str(wd), "--config.train.progress=none",
                     "--config.num_seeds=1",
                     "--config.data.in_memory=never",
                     f"--config.data.data_dir={tmp_path / 'tfds'}"]) == 0
  results = json.load(open(wd / "results.json"))
  names = results["dataset"]["task_names"]
  assert [n.split("/")[1] for n in names] == [
      "5_o_Clock_Shadow", "Black_Hair", "Blond_Hair", "Brown_Hair", "Goatee",
      "Mustache", "No_Beard", "Rosy_Cheeks", "Wearing_Hat"]
  assert len({r["arm"] for r in results["runs"]
              if r.get("role") == "grouping"}) == 36   # the 9·8/2 pairs
  gr = report.summarize([results])["conditions"][0]["grouping"]
  assert gr["num_trained"] == 1 + 9 + 36 and not gr["complete"]
  assert gr["methods"] == ["exhaustive", "pairs", "affinity"]
  assert np.asarray(gr["affinity"]["matrix"]).shape == (9, 9)
