"""Damaged builds: swapped split files, incomplete builds, paths in messages."""

import json
import os
import shutil

from etils import epath
import numpy as np
import pytest

from mtljax import data
from mtljax.data import builders
from mtljax.data import checksums

NAME = "digits_multilabel"
SIZES = (600, 200, 200)  # validation and test: same size, same record count


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """One tiny build, made once; tests damage private copies of it."""
  root = str(tmp_path_factory.mktemp("faults") / "tfds")
  data.build(NAME, root, SIZES, log=None)
  return root


@pytest.fixture
def copy(built, tmp_path):
  """A private copy of the build: (data dir, build dir)."""
  root = str(tmp_path / "tfds")
  shutil.copytree(built, root)
  return root, builders.get_builder(NAME, root, SIZES).data_dir


def _shard(build_dir, split):
  return os.path.join(build_dir, f"{NAME}-{split}.array_record-00000-of-00001")


def _swap(a, b):
  os.rename(a, a + ".tmp")
  os.rename(b, a)
  os.rename(a + ".tmp", b)


def _load(root, split):
  return data.load_split(NAME, split, root, SIZES, log=None)


def _equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ------------------------------------------------------------ checksums.


def test_build_records_a_checksum_per_split(copy):
  _, build_dir = copy
  with open(os.path.join(build_dir, builders.CHECKSUMS_FILENAME)) as f:
    recorded = json.load(f)
  assert sorted(recorded) == sorted(builders.SPLITS)
  for split, n in zip(builders.SPLITS, SIZES):
    assert recorded[split]["num_examples"] == n
    assert recorded[split]["files"] == [os.path.basename(_shard(build_dir,
                                                                split))]
    assert len(recorded[split]["sha256"]) == 64
  assert recorded["validation"]["sha256"] != recorded["test"]["sha256"]


def test_swapped_split_files_of_the_same_size_are_caught(copy):
  root, build_dir = copy
  validation = _load(root, "validation")
  _swap(_shard(build_dir, "validation"), _shard(build_dir, "test"))
  for split in ("validation", "test"):
    with pytest.raises(data.DataError, match=f"split '{split}'") as e:
      _load(root, split)
    message = str(e.value)
    assert "swapped" in message and "checksum" in message
    assert f"delete {build_dir} " in message
    assert "GPath" not in message
  # Swapped back, the same process reads the split again (nothing stale is
  # cached) and gets the same data.
  _swap(_shard(build_dir, "validation"), _shard(build_dir, "test"))
  _equal(_load(root, "validation"), validation)


def test_changed_bytes_in_a_split_file_are_caught(copy):
  root, build_dir = copy
  # Same name, same size, other content: the checksum is over the bytes.
  path = _shard(build_dir, "train")
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(data.DataError, match=r"split 'train'.*does not match "
                     r"the checksum"):
    _load(root, "train")


def test_unchanged_split_is_hashed_once_per_process(copy, monkeypatch):
  root, _ = copy
  first = _load(root, "test")

  def no_rehash(*args, **kwargs):
    raise AssertionError("rehashed an unchanged split")

  monkeypatch.setattr(checksums.hashlib, "sha256", no_rehash)
  _equal(_load(root, "test"), first)


def test_build_without_checksums_records_them_on_first_read(copy):
  root, build_dir = copy
  path = os.path.join(build_dir, builders.CHECKSUMS_FILENAME)
  with open(path) as f:
    expected = json.load(f)
  os.remove(path)  # As left by a build made before checksums were recorded.
  _load(root, "test")  # Trusted as found...
  with open(path) as f:
    assert json.load(f) == expected
  # ... and checked from then on.
  _swap(_shard(build_dir, "validation"), _shard(build_dir, "test"))
  with pytest.raises(data.DataError, match="split 'test'.*checksum"):
    _load(root, "test")


def test_build_without_checksums_in_a_read_only_dir_still_loads(
    copy, monkeypatch):
  root, build_dir = copy
  os.remove(os.path.join(build_dir, builders.CHECKSUMS_FILENAME))

  def read_only(builder):
    raise PermissionError(13, "Permission denied", builder.data_dir)

  monkeypatch.setattr(builders, "write_checksums", read_only)
  assert len(_load(root, "test")["labels"]) == SIZES[2]


def test_unreadable_checksum_file_names_it(copy):
  root, build_dir = copy
  path = os.path.join(build_dir, builders.CHECKSUMS_FILENAME)
  with open(path, "w") as f:
    f.write("{not json")
  with pytest.raises(data.DataError, match="cannot read its checksums") as e:
    _load(root, "test")
  assert path in str(e.value) and "rebuilt on first use" in str(e.value)


def test_missing_split_file_is_a_data_error_naming_the_plain_path(copy):
  root, build_dir = copy
  os.remove(_shard(build_dir, "test"))
  with pytest.raises(data.DataError, match="No such file") as e:
    _load(root, "test")
  assert _shard(build_dir, "test") in str(e.value)
  assert "GPath" not in str(e.value)


# ----------------------------------------------------- incomplete builds.


def test_build_without_dataset_info_is_moved_aside_and_rebuilt(copy):
  root, build_dir = copy
  reference = {s: _load(root, s) for s in builders.SPLITS}
  os.remove(os.path.join(build_dir, "dataset_info.json"))
  assert not data.is_built(NAME, root, SIZES)
  logs = []
  data.build(NAME, root, SIZES, log=logs.append)
  assert logs[0] == (f"{build_dir} holds an incomplete build of {NAME} (no "
                     f"dataset_info.json): moved it to {build_dir}.incomplete")
  assert logs[1].startswith(f"building {NAME} (rebuild): ")
  assert logs[2].startswith(f"built {NAME} in ") and len(logs) == 3
  assert data.is_built(NAME, root, SIZES)
  # The incomplete build is kept, not deleted.
  assert os.path.isfile(_shard(build_dir + ".incomplete", "train"))
  for split in builders.SPLITS:
    _equal(_load(root, split), reference[split])
  # A second incomplete build does not overwrite the first one moved aside.
  os.remove(os.path.join(build_dir, "dataset_info.json"))
  _equal(data.load_split(NAME, "test", root, SIZES, log=logs.append),
         reference["test"])
  assert f"moved it to {build_dir}.incomplete.1" in logs[3]
  assert os.path.isdir(build_dir + ".incomplete")


def test_a_build_that_writes_no_dataset_info_is_not_reported_as_built(
    tmp_path, monkeypatch):
  monkeypatch.setattr(builders.DigitsMultilabel, "download_and_prepare",
                      lambda self, **kwargs: None)
  logs = []
  with pytest.raises(data.DataError, match="without writing "
                     "dataset_info.json"):
    data.build(NAME, str(tmp_path), SIZES, log=logs.append)
  assert not [l for l in logs if l.startswith("built ")]


def test_silent_rebuild_still_says_where_the_old_build_went(copy, caplog):
  root, build_dir = copy
  os.remove(os.path.join(build_dir, "dataset_info.json"))
  with caplog.at_level("WARNING", logger="mtljax"):
    data.build(NAME, root, SIZES, log=None)
  assert f"moved it to {build_dir}.incomplete" in caplog.text
  assert data.is_built(NAME, root, SIZES)


# -------------------------------------------------------- paths in messages.


@pytest.mark.parametrize("sub", ["", "new/sub"])
def test_unwritable_data_dir_message_shows_the_plain_path(tmp_path,
                                                          monkeypatch, sub):
  root = os.path.join(str(tmp_path), sub) if sub else str(tmp_path)
  access = os.access
  # Tests may run as root, for whom every directory is writable.
  monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if (
      mode & os.W_OK) else access(path, mode, **kw))
  with pytest.raises(data.DataError) as e:
    data.build(NAME, root, SIZES, log=None)
  message = str(e.value)
  assert "GPath" not in message
  assert f"'{root}'" in message
  assert not os.listdir(tmp_path)  # nothing was written


def test_error_text_shows_plain_paths():
  path = "/some/data dir/x.json"
  e = FileNotFoundError(f"cannot open {epath.Path(path)!r}.\nmore lines")
  assert "GPath" in str(e)  # What etils and TFDS put in their messages.
  assert builders.error_text(e) == f"cannot open {path}"

