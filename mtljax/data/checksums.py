"""Per-split sha256 of a build's files: recorded at build time, checked on read.

    write_checksums(builder)            # after download_and_prepare
    verify_split(builder, "train")      # DataError if the files changed

Two split files of the same size swapped, or a file damaged in place, are
otherwise read silently. Hashing the files of the default `mtl_scenes`
train split (150 MB) takes about 0.3 s, once per process and file version.
A build made before checksums existed has none: it is trusted on first use
and its checksums are written then (or skipped, with a warning, in a
read-only data dir).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from typing import Sequence

import tensorflow_datasets as tfds

from mtljax import errors

DataError = errors.DataError
SPLITS = ("train", "validation", "test")
# In each build directory: {split: {"sha256", "num_examples", "files"}}.
CHECKSUMS_FILENAME = "mtljax_checksums.json"
_HASH_BLOCK = 1 << 20
_logger = logging.getLogger("mtljax")
_GPATH_REPR = re.compile(r"\b\w*GPath\((['\"])(.*?)\1\)")


def error_text(e: BaseException) -> str:
  """The first line of an exception's message (at most 300 characters).

  For quoting a library's error inside ours: TFDS and etils often format paths
  as "PosixGPath('...')", which is rewritten to the plain path.
  """
  text = _GPATH_REPR.sub(r"\2", str(e).strip())
  return (text.splitlines() or [""])[0][:300].rstrip(".")


# (path, inode, mtime_ns, size) of each file of a split -> sha256 of their
# bytes: reading the same unchanged split again in this process needs no
# rehash (a swap or rewrite changes the inode or the mtime).
_DIGESTS: dict[tuple, str] = {}


def _split_files(builder: tfds.core.DatasetBuilder, split: str) -> list[str]:
  """The split's shard file names, in shard order (from dataset_info.json)."""
  return list(builder.info.splits[split].filenames)


def _digest(directory: str, files: Sequence[str]) -> str:
  """sha256 over the bytes of `files` (in `directory`), in order; cached.

  Raises:
    OSError: a file is missing or unreadable.
  """
  paths = [os.path.join(directory, f) for f in files]
  key = tuple((p, st.st_ino, st.st_mtime_ns, st.st_size)
              for p, st in ((p, os.stat(p)) for p in paths))
  digest = _DIGESTS.get(key)
  if digest is None:
    h = hashlib.sha256()
    for path in paths:
      with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
          h.update(block)
    digest = _DIGESTS[key] = h.hexdigest()
  return digest


def _split_record(builder: tfds.core.DatasetBuilder, split: str) -> dict:
  files = _split_files(builder, split)
  return {"sha256": _digest(os.fspath(builder.data_dir), files),
          "num_examples": int(builder.info.splits[split].num_examples),
          "files": files}


def write_checksums(builder: tfds.core.DatasetBuilder) -> dict:
  """Records the checksum of every split of a finished build; returns them.

  Writes `<builder.data_dir>/mtljax_checksums.json` = {split: {"sha256",
  "num_examples", "files"}}, atomically (a temporary file, then
  `os.replace`): a reader never sees half a file.

  Raises:
    OSError: a split file is unreadable, or the directory is not writable.
  """
  directory = os.fspath(builder.data_dir)
  record = {s: _split_record(builder, s) for s in SPLITS}
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{CHECKSUMS_FILENAME}.",
                             suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(record, f, indent=1, sort_keys=True)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, os.path.join(directory, CHECKSUMS_FILENAME))
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
  return record


def verify_split(builder: tfds.core.DatasetBuilder, split: str,
                 where: str) -> None:
  """Checks a split's files against the checksum recorded when it was built.

  The checksum is a sha256 over the split's shard files, in shard order, so a
  damaged file, or the files of two splits swapped (same names, same number
  of records, other content), is caught. Unchanged files are hashed once per
  process (see `_DIGESTS`).

  Trust on first use: a build made before checksums were recorded has no
  checksum file. Its checksums are then computed from the files as they are
  and written (when the directory is writable), and later reads are checked
  against them; this first read is not checked.

  Args:
    builder: the builder of a prepared (built) dataset.
    split: one of `SPLITS`.
    where: what is being read (dataset, split, directory), for the message.

  Raises:
    DataError: the files differ from the recorded checksum, or the checksum
      file is unreadable.
    OSError: a file of the split is missing or unreadable.
  """
  directory = os.fspath(builder.data_dir)
  path = os.path.join(directory, CHECKSUMS_FILENAME)
  fix = (f"the build is corrupt or incomplete, or its files were changed: "
         f"delete {directory} and it is rebuilt on first use")
  try:
    with open(path, encoding="utf-8") as f:
      recorded = json.load(f)
  except FileNotFoundError:
    recorded = None
  except (OSError, ValueError) as e:
    raise DataError(f"{where}: cannot read its checksums, {path}: "
                    f"{type(e).__name__}: {error_text(e)}; {fix}") from e
  if recorded is None:
    _split_record(builder, split)  # This split's files must at least exist.
    try:
      write_checksums(builder)
    except OSError as e:  # E.g. a read-only data dir: still usable.
      _logger.warning("could not record the checksums of %s: %s", directory,
                      error_text(e))
    return
  entry = recorded.get(split) if isinstance(recorded, dict) else None
  if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)):
    raise DataError(f"{where}: {path} holds no checksum for split "
                    f"{split!r}; {fix}")
  files = _split_files(builder, split)
  num_examples = int(builder.info.splits[split].num_examples)
  if entry.get("files") != files or entry.get("num_examples") != num_examples:
    raise DataError(f"{where}: dataset_info.json lists {num_examples} "
                    f"examples in {', '.join(files)}, but it was built with "
                    f"{entry.get('num_examples')} in "
                    f"{', '.join(map(str, entry.get('files') or ()))}; {fix}")
  digest = _digest(directory, files)
  if digest != entry["sha256"]:
    raise DataError(f"{where}: the sha256 of {', '.join(files)} does not "
                    f"match the checksum recorded at build time in "
                    f"{CHECKSUMS_FILENAME} (e.g. a damaged file, or the "
                    f"files of two splits swapped); {fix}")


