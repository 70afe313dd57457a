"""Offline stand-ins for prepared TFDS datasets (tests, docs, the benchmark).

    with mtljax.data.testing.mock_tfds(num_examples=64):
      config.data.name = "tfds:celeb_a"      # no files, no download
      mtljax.train_and_evaluate(config, workdir)

`tfds.testing.mock_data` (policy USE_CODE) serves random examples of the
dataset's real features from its builder code: no metadata files, no
download, no TensorFlow. Record i is generated from a generator seeded with
i, so every read of it gives the same example (and every split the same
records). The data are noise: they exercise the code, not a result.
"""

from __future__ import annotations

import contextlib

import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking


@contextlib.contextmanager
def mock_tfds(num_examples: int = 4):
  """`tfds.testing.mock_data(policy=USE_CODE)`, with its batch read fixed.

  In tensorflow-datasets 4.9.10 the mock's `__getitems__` is an unbound
  `functools.partial(_getitems, generator=...)` set on a MagicMock (which
  only binds the magic methods it knows, and `__getitems__` is not one), so
  `source.__getitems__(keys)` raises TypeError. This accepts both call
  forms; the generated examples are unchanged.

  Args:
    num_examples: records in every split.
  """
  getitem = mocking._getitem  # pylint: disable=protected-access

  def getitems(*args, generator, serialized=False):
    self = args[0] if len(args) == 2 else None
    return [getitem(self, k, generator, serialized=serialized)
            for k in args[-1]]

  with mocking.mock.patch.object(mocking, "_getitems", getitems), \
      tfds.testing.mock_data(num_examples=num_examples,
                             policy=tfds.testing.MockPolicy.USE_CODE):
    yield
