"""Every error type of mtljax, and which are user errors. A leaf: no imports.

Each layer raises its own type where the problem is found (ConfigError in
config.py, DataError in data/, CheckpointError in run/checkpoint.py, ...) and
re-exports it there, but all are defined here, so that the CLI can catch
exactly these without importing jax, orbax or TFDS: a genuine bug still shows
its full traceback.

Exit statuses of the CLI: user errors 2, NonFiniteError 3, DiskFullError 4,
Preempted 143.
"""


class ConfigError(ValueError):
  """A user error in a config file, variant or override."""


class DataError(ValueError):
  """A user error about data: unknown dataset, bad split or label control."""


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used (incompatible config, none restorable)."""


class ReportError(ValueError):
  """Inputs or an output directory that no report can be made from."""


class UsageError(ValueError):
  """A bad command-line argument or input path outside configs and data."""


class NonFiniteError(RuntimeError):
  """A NaN/inf loss or gradient under nonfinite_policy="halt"."""


class Preempted(RuntimeError):
  """SIGTERM received; a checkpoint was saved before stopping."""


class DiskFullError(OSError):
  """The disk holding the workdir filled up; the last checkpoint is intact."""


USER_ERRORS = (ConfigError, DataError, CheckpointError, ReportError,
               UsageError)
NON_FINITE = (NonFiniteError,)
PREEMPTED = (Preempted,)
DISK_FULL = (DiskFullError,)
