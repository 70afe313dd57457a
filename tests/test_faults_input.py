"""Faults: bad input (configs, datasets, workdirs).

One `error:` line naming the field, file or value, exit status 2, no
traceback, nothing touched.
"""

import os
import shutil

import numpy as np
import pytest

from mtljax import cli
from mtljax import data as data_lib
import mtljax.data.procedural  # noqa: F401 (data_lib.procedural)
from mtljax.data import pipeline as pipeline_lib
from tests.helpers import FakeSource
from tests.faults import *  # noqa: F401,F403 pylint: disable=wildcard-import

# When a restore fails, orbax abandons the reads of the other arrays; Python
# reports them ("Exception ignored in <coroutine ...>") when they are garbage
# collected.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")


# ---------------------------------------------------------------- bad input.


@pytest.mark.parametrize("extra, expected", [
    (["--config.model.widht=8"],
     "unknown config field 'model.widht' (did you mean 'model.width'?)"),
    (["--config.trian.steps=8"], "unknown config field 'trian.steps'"),
    (["--config.model.width=0"], "config.model.width must be > 0; got 0"),
    (["--config.model.width=-4"], "config.model.width must be > 0; got -4"),
    (["--config.model.width=wide"],
     "config.model.width must be an integer; got 'wide'"),
    (["--config.optimizer.learning_rates=(0.0,)"],
     "config.optimizer.learning_rates must be non-empty and > 0; got (0.0,)"),
    (["--config.optimizer.learning_rates=-0.1"],
     "learning_rates must be non-empty and > 0; got (-0.1,)"),
    (["--config.train.batch_size=12"],
     "config.train.batch_size=12 is not divisible by the 8 devices"),
    (["--config.modes=()"], "config.modes is empty"),
    (["--config.modes=('mtl','stll')"], "config.modes='stll' is not one of"),
    (["--config.loss.missing_policies=()"],
     "config.loss.missing_policies must be non-empty"),
    (["--config.data.label_budget=(10,20,30)"],
     "config.data.label_budget must have 1 or 4 values"),
    (["--config.data.shuffle_tasks=(7,)"],
     "config.data.shuffle_tasks has task index 7"),
    (["--config.train.nonfinite_policy=ignore"],
     "config.train.nonfinite_policy='ignore' is not one of"),
    (["--config.data.name=mtl_scene"], "unknown dataset 'mtl_scene'"),
    (["--config.data.train_examples=5000"],
     "train_examples=5000 exceeds the 600 examples"),
    (["--config.num_devices=16"], "config.num_devices=16 but only 8 devices"),
    # Resuming a workdir made by another model shape.
    (["--config.model.width=32"],
     "was made by another config (config.model.width=32 here but 8 in "
     "config.json)"),
    (["--config.model.depth=4"], "config.model.depth=4 here but"),
])
def test_bad_config_is_one_error_line_and_touches_nothing(
    in_process, finished, capsys, extra, expected):
  before = _snapshot(finished)
  assert in_process(_argv(finished, *extra)) == cli.EXIT_USER_ERROR
  assert expected in _error_line(capsys.readouterr().err)
  assert _snapshot(finished) == before


@pytest.mark.parametrize("spec, expected", [
    ("experiments/no_such_experiment.py", "config file not found"),
    (f"{E1}:smok", "unknown config variant 'smok'"),
])
def test_bad_config_file_or_variant(in_process, finished, capsys, spec,
                                    expected):
  argv = _argv(finished)
  argv[argv.index("--config") + 1] = spec
  assert in_process(argv) == cli.EXIT_USER_ERROR
  assert expected in _error_line(capsys.readouterr().err)


def test_bad_input_in_a_real_process_has_no_traceback(rel, finished):
  """The same contract through the real entry point (exit status, stderr)."""
  before = _snapshot(finished)
  res = _run(rel, _argv(finished, "--config.model.width=32"))
  assert res.returncode == cli.EXIT_USER_ERROR
  assert "config.model.width=32 here but 8" in _error_line(res.stderr)
  assert _snapshot(finished) == before


@pytest.mark.parametrize("kind", ["below_a_file", "read_only_dir"])
def test_unwritable_workdir(in_process, tmp_path, capsys, kind):
  if kind == "below_a_file":
    # A path that no one can create, root included.
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    wd = blocker / "run"
  else:
    if os.geteuid() == 0:
      pytest.skip("root may write into a read-only directory")
    wd = tmp_path / "ro"
    wd.mkdir()
    wd.chmod(0o500)
  try:
    assert in_process(_argv(wd)) == cli.EXIT_USER_ERROR
  finally:
    if kind == "read_only_dir":
      wd.chmod(0o700)
  err = _error_line(capsys.readouterr().err)
  assert f"workdir '{wd}' is not writable" in err


def test_data_dir_that_is_not_a_directory(in_process, tmp_path, capsys):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  argv = _argv(tmp_path / "run", f"--config.data.data_dir={blocker}")
  assert in_process(argv) == cli.EXIT_USER_ERROR
  assert "exists but is not a directory" in _error_line(
      capsys.readouterr().err)


def _copy_dataset(rel, tmp_path):
  """A private copy of the built dataset; returns (data_dir, build dir)."""
  data_dir = str(tmp_path / "tfds")
  shutil.copytree(rel.data_dir, data_dir)
  build = data_lib.builders.get_builder("mtl_scenes", data_dir,
                                        SPLIT_SIZES).data_dir
  return data_dir, str(build)


def _shard(build, split):
  return os.path.join(build, f"mtl_scenes-{split}.array_record-00000-of-00001")


def _garble_unrecorded(build, split):
  """A damaged file in a build without checksums (made before they were)."""
  os.remove(os.path.join(build, data_lib.builders.CHECKSUMS_FILENAME))
  _garble(_shard(build, split))


@pytest.mark.parametrize("damage, expected", [
    # The recorded checksum catches a damaged file before it is read...
    (lambda b: _garble(_shard(b, "train")),
     "split 'train' in {build}: the sha256 of "
     "mtl_scenes-train.array_record-00000-of-00001 does not match"),
    # ... and without one, reading it fails.
    (lambda b: _garble_unrecorded(b, "train"), "Corrupted Riegeli"),
    (lambda b: _garble(_shard(b, "validation")), "split 'validation'"),
    (lambda b: os.truncate(_shard(b, "train"), 1000), "split 'train'"),
    (lambda b: os.remove(_shard(b, "test")), "No such file"),
    (lambda b: open(os.path.join(b, "dataset_info.json"), "w").write("{x"),
     "cannot read the built dataset 'mtl_scenes'"),
])
def test_corrupt_or_missing_dataset_files(rel, in_process, finished, tmp_path,
                                          capsys, damage, expected):
  data_dir, build = _copy_dataset(rel, tmp_path)
  damage(build)
  before = _snapshot(finished)
  argv = _argv(finished, f"--config.data.data_dir={data_dir}")
  assert in_process(argv) == cli.EXIT_USER_ERROR
  err = _error_line(capsys.readouterr().err)
  assert expected.format(build=build) in err
  assert os.path.basename(os.path.dirname(build)) in err  # names the build
  assert "corrupt or incomplete" in err
  assert _snapshot(finished) == before


def test_dataset_with_a_label_outside_minus1_0_1(rel, in_process, tmp_path,
                                                 monkeypatch, capsys):
  # Build a real (tiny) dataset on disk whose train example 5 has label 2.
  generate = data_lib.procedural.scenes.generate_split

  def bad_generate(seed, split, n, *args, **kwargs):
    for chunk, (images, labels) in enumerate(generate(seed, split, n, *args,
                                                      **kwargs)):
      if split == "train" and chunk == 0:
        labels = labels.copy()
        labels[5, 1] = 2
      yield images, labels

  data_dir = str(tmp_path / "tfds")
  with monkeypatch.context() as m:
    m.setattr(data_lib.procedural.scenes, "generate_split", bad_generate)
    data_lib.build("mtl_scenes", data_dir, SPLIT_SIZES, log=None)

  wd = tmp_path / "run"
  argv = _argv(wd, f"--config.data.data_dir={data_dir}")
  assert in_process(argv) == cli.EXIT_USER_ERROR
  err = _error_line(capsys.readouterr().err)
  assert "split 'train'" in err and data_dir in err
  assert ("label value 2 at example 5, task 'car' (binary) is not 0 or 1 "
          "(or -1 for '?')") in err
  assert _steps(wd) == []


@pytest.mark.parametrize("value, key, expected", [
    (np.nan, "image", "pixel value nan at example 4"),
    (np.inf, "image", "pixel value inf at example 4"),
    (-3.0, "image", "pixel value -3.0 at example 4"),
    (256, "image", "pixel value 256 at example 4"),
    (np.nan, "labels", "label value nan at example 4, task 'car'"),
    (0.5, "labels", "label value 0.5 at example 4, task 'car'"),
])
def test_non_finite_or_out_of_range_stored_values(rel, monkeypatch, value,
                                                  key, expected):
  """NaN cannot be stored as uint8, so a source with float values stands in.

  The check runs before the cast to uint8/int8, which would otherwise turn a
  NaN into an ordinary-looking pixel or label.
  """
  builder = data_lib.builders.get_builder("mtl_scenes", rel.data_dir,
                                          SPLIT_SIZES)
  records = [dict(r) for r in
             builder.as_data_source("test").__getitems__(list(range(10)))]
  dtype = np.float32 if isinstance(value, float) else np.int32
  for r in records:
    r[key] = r[key].astype(dtype)
  if key == "image":
    records[4]["image"][3, 7, 1] = value
  else:
    records[4]["labels"][1] = value
  monkeypatch.setattr(data_lib.builders.MtlScenes, "as_data_source",
                      lambda self, split: FakeSource(records))
  with pytest.raises(data_lib.DataError, match="split 'test'") as e:
    data_lib.load_split("mtl_scenes", "test", rel.data_dir, SPLIT_SIZES)
  assert expected in str(e.value)


def test_stored_labels_for_another_task_count(rel, monkeypatch):
  builder = data_lib.builders.get_builder("mtl_scenes", rel.data_dir,
                                          SPLIT_SIZES)
  records = [dict(r) for r in
             builder.as_data_source("test").__getitems__(list(range(10)))]
  records[4]["labels"] = np.zeros(5, np.int8)  # 5 tasks; the model has 4
  monkeypatch.setattr(data_lib.builders.MtlScenes, "as_data_source",
                      lambda self, split: FakeSource(records))
  with pytest.raises(data_lib.DataError,
                     match=r"split 'test' in .*: stored 'labels' of example 4 "
                     r"has shape \(5,\), expected \(4,\)"):
    data_lib.load_split("mtl_scenes", "test", rel.data_dir, SPLIT_SIZES)


def test_check_examples_accepts_valid_values():
  pipeline_lib.check_examples("x", TASKS, images=np.zeros((2, 4, 4, 3),
                                                          np.float32) + 255,
                              labels=np.array([[-1, 0, 1, 1]] * 2, np.float32))
  pipeline_lib.check_examples("x", TASKS, images=np.zeros((0, 4, 4, 3)),
                              labels=np.zeros((0, 4)))
