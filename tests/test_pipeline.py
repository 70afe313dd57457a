"""Split loading, eval arrays and the grain train pipeline (resume, hosts)."""

import itertools

import numpy as np
import pytest

from mtljax import data
from mtljax.data import labels as labels_lib
from tests.helpers import FakeSource


def _pipe(tiny_data, name="mtl_scenes", **kw):
  kw.setdefault("seeds", (0, 1))
  kw.setdefault("global_batch_size", 64)
  kw.setdefault("process_index", 0)
  kw.setdefault("process_count", 1)
  return data.TrainPipeline(name, data_dir=tiny_data.data_dir,
                            split_sizes=tiny_data.split_sizes, log=None, **kw)


def _equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_load_split_shapes_dtypes_and_prefix(tiny_data):
  d = data.load_split("digits_multilabel", "train", tiny_data.data_dir,
                      tiny_data.split_sizes)
  assert d["image"].shape == (2000, 24, 24, 1) and d["image"].dtype == np.uint8
  assert d["labels"].shape == (2000, 10) and d["labels"].dtype == np.int8
  head = data.load_split("digits_multilabel", "train", tiny_data.data_dir,
                         tiny_data.split_sizes, num_examples=100)
  np.testing.assert_array_equal(head["image"], d["image"][:100])
  np.testing.assert_array_equal(head["labels"], d["labels"][:100])


def test_normalize_maps_uint8_to_centred_float32():
  x = data.normalize(np.array([0, 51, 255], np.uint8))
  assert x.dtype == np.float32
  np.testing.assert_allclose(x, [-0.5, -0.3, 0.5], atol=1e-6)


def test_eval_arrays_are_fully_labelled_and_normalised(tiny_data):
  images, labels, mask = data.eval_arrays(
      "mtl_scenes", "test", tiny_data.data_dir, tiny_data.split_sizes)
  stored = data.load_split("mtl_scenes", "test", tiny_data.data_dir,
                           tiny_data.split_sizes)
  assert images.dtype == np.float32 and images.shape == (500, 32, 32, 3)
  np.testing.assert_allclose(images, data.normalize(stored["image"]))
  assert mask.dtype == bool and mask.all()
  np.testing.assert_array_equal(labels, stored["labels"])
  # num_examples caps evaluation: fewer -> a prefix, more -> everything.
  head, head_labels, _ = data.eval_arrays(
      "mtl_scenes", "test", tiny_data.data_dir, tiny_data.split_sizes,
      num_examples=120)
  np.testing.assert_array_equal(head, images[:120])
  np.testing.assert_array_equal(head_labels, labels[:120])
  everything, _, _ = data.eval_arrays("mtl_scenes", "test", tiny_data.data_dir,
                                      tiny_data.split_sizes, num_examples=9999)
  assert len(everything) == 500


def test_batches_have_the_documented_shapes(tiny_data):
  pipe = _pipe(tiny_data, seeds=(3, 4, 5))
  b = pipe.batch(0)
  assert b["image"].shape == (3, 64, 32, 32, 3)
  assert b["image"].dtype == np.float32
  assert b["labels"].shape == (3, 64, 4) and b["labels"].dtype == np.float32
  assert b["mask"].shape == (3, 64, 4) and b["mask"].dtype == bool
  assert set(np.unique(b["labels"])) <= {0.0, 1.0}
  assert (pipe.num_tasks, pipe.image_shape, pipe.num_train,
          pipe.local_batch_size) == (4, (32, 32, 3), 2000, 64)


def test_resumed_pipeline_yields_the_uninterrupted_batches(tiny_data):
  kw = dict(train_examples=300, label_fraction=0.5)  # 4 steps per epoch
  straight = _pipe(tiny_data, **kw)
  assert straight.steps_per_epoch == 4
  uninterrupted = list(itertools.islice(straight.batches(0), 11))
  resumed = list(itertools.islice(_pipe(tiny_data, **kw).batches(6), 5))
  for a, b in zip(uninterrupted[6:], resumed):
    _equal(a, b)
  for step in (0, 5, 10):
    _equal(uninterrupted[step], straight.batch(step))
  unprefetched = _pipe(tiny_data, prefetch=0, **kw)
  _equal(next(unprefetched.batches(9)), uninterrupted[9])


def test_each_epoch_is_a_fresh_permutation_without_the_remainder(tiny_data):
  pipe = _pipe(tiny_data, train_examples=300)
  epochs = [np.concatenate([pipe.indices(e * 4 + k) for k in range(4)], axis=1)
            for e in range(3)]
  for idx in epochs:
    for row in idx:  # per seed: 256 distinct examples of the 300
      assert len(set(row)) == 256 and row.max() < 300
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[0][0], epochs[0][1])  # seeds differ


def test_a_seed_sees_the_same_data_whatever_runs_beside_it(tiny_data):
  """The MTL and STL arms (and any co-vmapped seeds) of seed s are paired."""
  kw = dict(label_budget=[40, 10, 0, -1], shuffle_tasks=["car"])
  pair = _pipe(tiny_data, seeds=(0, 7), **kw)
  alone = _pipe(tiny_data, seeds=(7,), **kw)
  np.testing.assert_array_equal(pair.masks[1], alone.masks[0])
  np.testing.assert_array_equal(pair.labels[1], alone.labels[0])
  for step in (0, 33):
    a, b = pair.batch(step), alone.batch(step)
    for k in a:
      np.testing.assert_array_equal(a[k][1], b[k][0], err_msg=k)


def test_label_controls_are_applied_per_seed(tiny_data):
  pipe = _pipe(tiny_data, seeds=(0, 1), label_budget=[40, 10, 0, -1],
               shuffle_tasks=[1])
  np.testing.assert_array_equal(pipe.masks.sum(1), [[40, 10, 0, 2000]] * 2)
  assert not np.array_equal(pipe.masks[0], pipe.masks[1])
  stored = data.load_split("mtl_scenes", "train", tiny_data.data_dir,
                           tiny_data.split_sizes)["labels"]
  for row, seed in enumerate(pipe.seeds):
    labels01, mask = labels_lib.apply_label_controls(
        stored, seed=seed, budget=[40, 10, 0, -1], shuffle_tasks=[1])
    np.testing.assert_array_equal(pipe.masks[row], mask)
    np.testing.assert_array_equal(pipe.labels[row], labels01)
  # A batch carries exactly those labels at its examples.
  idx = pipe.indices(3)
  b = pipe.batch(3)
  for row in range(2):
    np.testing.assert_array_equal(b["mask"][row], pipe.masks[row][idx[row]])
    np.testing.assert_array_equal(b["labels"][row], pipe.labels[row][idx[row]])


def test_label_fraction_minus_one_means_all(tiny_data):
  pipe = _pipe(tiny_data, seeds=(0,), label_fraction=[0.1, -1, -1, -1])
  np.testing.assert_array_equal(pipe.masks[0].sum(0), [200, 2000, 2000, 2000])
  full = _pipe(tiny_data, seeds=(0,), label_fraction=(-1.0,),
               label_budget=(-1,))
  assert full.masks.all()


def test_host_slices_concatenate_to_the_global_batch(tiny_data):
  whole = _pipe(tiny_data, global_batch_size=64).batch(5)
  parts = [_pipe(tiny_data, global_batch_size=64, process_index=p,
                 process_count=4).batch(5) for p in range(4)]
  assert parts[0]["image"].shape[1] == 16
  for k in whole:
    np.testing.assert_array_equal(
        np.concatenate([p[k] for p in parts], axis=1), whole[k], err_msg=k)


def test_missing_dataset_is_built_on_first_use(tmp_path):
  logs = []
  pipe = data.TrainPipeline("digits_multilabel", seeds=0, global_batch_size=8,
                            data_dir=str(tmp_path), split_sizes=(300, 50, 50),
                            process_index=0, process_count=1, log=logs.append)
  assert logs[0].startswith("building digits_multilabel (first use)")
  assert pipe.batch(0)["image"].shape == (1, 8, 24, 24, 1)
  assert data.is_built("digits_multilabel", str(tmp_path), (300, 50, 50))
  logs.clear()
  data.eval_arrays("digits_multilabel", "validation", str(tmp_path),
                   (300, 50, 50), log=logs.append)
  assert logs == []


@pytest.mark.parametrize("kwargs, match", [
    (dict(label_fraction=1.5), r"label_fraction.*1\.5"),
    (dict(label_fraction=[0.1, 0.2]), r"label_fraction.*\[0\.1, 0\.2\]"),
    (dict(label_budget=5000), r"label_budget.*5000"),
    (dict(label_budget=500, train_examples=300), r"label_budget.*500"),
    (dict(label_fraction=0.1, label_budget=5), "not both"),
    (dict(train_examples=3000), r"train_examples=3000"),
    (dict(train_examples=0), r"train_examples.*0"),
    (dict(global_batch_size=30, process_count=4), r"global_batch_size=30"),
    (dict(global_batch_size=4096), r"global_batch_size=4096"),
    (dict(process_index=4, process_count=4), r"process_index.*4"),
    (dict(seeds=()), "seeds"),
    (dict(shuffle_tasks=["bus"]), "'bus'"),
    (dict(shuffle_tasks=[9]), "9"),
    (dict(shuffle_tasks=[1, "car"]), "twice"),
])
def test_bad_pipeline_arguments_raise_data_error(tiny_data, kwargs, match):
  with pytest.raises(data.DataError, match=match):
    _pipe(tiny_data, **kwargs)


def test_bad_load_arguments_raise_data_error(tiny_data):
  with pytest.raises(data.DataError, match="'valid'"):
    data.load_split("mtl_scenes", "valid", tiny_data.data_dir,
                    tiny_data.split_sizes)
  with pytest.raises(data.DataError, match="num_examples=501"):
    data.load_split("mtl_scenes", "test", tiny_data.data_dir,
                    tiny_data.split_sizes, num_examples=501)
  with pytest.raises(data.DataError, match="num_examples.*0"):
    data.eval_arrays("mtl_scenes", "test", tiny_data.data_dir,
                     tiny_data.split_sizes, num_examples=0)
  with pytest.raises(data.DataError, match="step"):
    _pipe(tiny_data).batch(-1)


@pytest.mark.parametrize("corrupt, match", [
    (lambda r: r[7].update(labels=np.array([0, 1, 2, 0], np.int8)),
     r"mtl_scenes split 'test'.*label value 2.*example 7.*'stop_sign'"),
    (lambda r: r[3].update(image=np.zeros((32, 32, 1), np.uint8)),
     r"mtl_scenes split 'test'.*'image'.*\(32, 32, 1\)"),
    (lambda r: r.reverse(), r"mtl_scenes split 'test'.*out of order"),
])
def test_corrupted_stored_data_raises_data_error(tiny_data, monkeypatch,
                                                 corrupt, match):
  builder = data.builders.get_builder("mtl_scenes", tiny_data.data_dir,
                                      tiny_data.split_sizes)
  real = builder.as_data_source("test")
  records = [dict(r) for r in real.__getitems__(list(range(20)))]
  corrupt(records)
  monkeypatch.setattr(data.builders.MtlScenes, "as_data_source",
                      lambda self, split: FakeSource(records))
  with pytest.raises(data.DataError, match=match):
    data.load_split("mtl_scenes", "test", tiny_data.data_dir,
                    tiny_data.split_sizes)


# ------------------------------------------------------------- streaming.


def test_streamed_batches_equal_in_memory_batches(tiny_data):
  kw = dict(seeds=(0, 1, 2), label_budget=(50, -1, 10, -1))
  held = _pipe(tiny_data, in_memory="always", **kw)
  streamed = _pipe(tiny_data, in_memory="never", **kw)
  assert not held.streaming and streamed.streaming
  assert streamed._images is None  # pylint: disable=protected-access
  for step in (0, 1, 7, held.steps_per_epoch + 3):
    _equal(held.batch(step), streamed.batch(step))
  # Resumed mid-stream through grain's prefetching iterator, too.
  _equal(next(iter(streamed.batches(5))), held.batch(5))


def test_auto_streams_only_above_the_memory_limit(tiny_data, monkeypatch):
  assert not _pipe(tiny_data).streaming  # 32x32x3 x 2000: 6 MB
  monkeypatch.setattr(data.pipeline, "IN_MEMORY_BYTES", 1000)
  assert _pipe(tiny_data).streaming
  with pytest.raises(data.DataError, match="in_memory must be one of"):
    _pipe(tiny_data, in_memory="sometimes")


@pytest.mark.parametrize("in_memory", ["always", "never"])
def test_eval_split_chunks_equal_the_whole_split(tiny_data, in_memory):
  images, labels, mask = data.eval_arrays(
      "mtl_scenes", "validation", tiny_data.data_dir, tiny_data.split_sizes,
      log=None)
  ev = data.eval_split("mtl_scenes", "validation", tiny_data.data_dir,
                       tiny_data.split_sizes, in_memory=in_memory, log=None)
  assert len(ev) == len(images)
  np.testing.assert_array_equal(ev.labels, labels)
  np.testing.assert_array_equal(ev.mask, mask)
  for start, stop in ((0, 7), (7, 300), (300, len(ev))):
    np.testing.assert_array_equal(ev.images(start, stop), images[start:stop])
