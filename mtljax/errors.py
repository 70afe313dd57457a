"""Which exceptions are user errors (one `error:` line, exit 2) and which not.

Each module raises its own error type where the problem is found
(ConfigError in config.py, DataError in data/, CheckpointError in
checkpoint.py); the CLI catches exactly these, so a genuine bug still shows its
full traceback.
"""

from mtljax import checkpoint
from mtljax import config
from mtljax import data
from mtljax import train
from mtljax import workdir


class UsageError(ValueError):
  """A bad command-line argument or input path outside configs and data."""


USER_ERRORS = (config.ConfigError, data.DataError, checkpoint.CheckpointError,
               UsageError)
NON_FINITE = (train.NonFiniteError,)
PREEMPTED = (train.Preempted,)
DISK_FULL = (workdir.DiskFullError,)
