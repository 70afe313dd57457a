"""Shared test set-up: 8 forced CPU devices, set before jax is imported.

Sharding tests need several devices; on a CPU-only machine XLA can split the
host into N virtual devices. The flag only takes effect if it is set before
the first `import jax`, which is why it lives here, at the top of conftest.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import types  # pylint: disable=g-import-not-at-top,wrong-import-position

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# The fault-injection fixtures (rel, baseline, finished, in_process, rerun).
pytest_plugins = ["tests.faults"]

TINY_SPLIT_SIZES = (2000, 500, 500)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
  """A TFDS data dir with tiny (2000/500/500) builds of two datasets.

  Built once per session (a few seconds); `logs` holds the build log lines.
  """
  from mtljax import data  # pylint: disable=g-import-not-at-top
  root = str(tmp_path_factory.mktemp("tfds"))
  logs = []
  for name in ("mtl_scenes", "digits_multilabel"):
    data.build(name, root, TINY_SPLIT_SIZES, log=logs.append)
  return types.SimpleNamespace(data_dir=root, split_sizes=TINY_SPLIT_SIZES,
                               logs=logs)


@pytest.fixture(scope="session")
def smoke_data_dir(tmp_path_factory):
  """A session TFDS data dir for end-to-end runs (datasets build on first use).

  Set as TFDS_DATA_DIR for the session so that configs, the CLI and
  subprocesses all find the same builds without touching ~/tensorflow_datasets.
  """
  root = str(tmp_path_factory.mktemp("tfds_e2e"))
  old = os.environ.get("TFDS_DATA_DIR")
  os.environ["TFDS_DATA_DIR"] = root
  yield root
  if old is None:
    os.environ.pop("TFDS_DATA_DIR", None)
  else:
    os.environ["TFDS_DATA_DIR"] = old
