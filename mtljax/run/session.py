"""Process set-up shared by the `mtljax` command and the Python API.

    session.prepare()      # logging, allocator, compilation cache; idempotent

The command line sets these up in `cli.main`; a notebook or script that calls
`mtljax.train_and_evaluate` or `mtljax.load_model` gets the same through
`prepare()`, without taking over a logging set-up of its own.

Nothing here imports jax at module level: the allocator must be tuned before
jax starts its threads (see mtljax/hostmem.py).
"""

from __future__ import annotations

import logging
import os
import sys

from mtljax import hostmem

_FORMAT = "%(asctime)s %(name)s: %(message)s"
_DATEFMT = "%H:%M:%S"


def enable_compilation_cache() -> None:
  """Persists compiled programs across processes and sweep points.

  Sweep points that share shapes (same width, runs and batch) then compile
  once: a large saving for the unrolled CPU programs. Set
  MTLJAX_COMPILATION_CACHE to a directory, or to "" to disable it.
  """
  path = os.environ.get("MTLJAX_COMPILATION_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache",
                                     "mtljax", "xla"))
  if not path:
    return
  import jax  # pylint: disable=g-import-not-at-top
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return  # a cache is an optimisation, never a reason to fail
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def setup_logging() -> bool:
  """Shows mtljax's progress lines (INFO) where nothing else would.

  A notebook's stderr is no terminal, so training reports progress as log
  lines on the "mtljax" logger, and with no handler anywhere Python drops
  INFO records. A handler is added to that logger (which then stops
  propagating to the root) only if neither it nor the root logger has one:
  an application's own logging set-up is left alone.

  Returns:
    Whether a handler was added.
  """
  logger = logging.getLogger("mtljax")
  if logger.handlers or logging.getLogger().handlers:
    return False
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter(_FORMAT, datefmt=_DATEFMT))
  logger.addHandler(handler)
  if logger.level == logging.NOTSET:
    logger.setLevel(logging.INFO)
  # absl's logging (orbax uses it) calls logging.basicConfig() on its first
  # message, which gives the root a handler: each line would print twice.
  logger.propagate = False
  return True


def tune_allocator_if_early() -> bool:
  """hostmem.tune_allocator(), but only before jax has been imported.

  Once jax runs its threads have their malloc arenas, and changing the
  allocator then only costs memory without saving the page faults.

  Returns:
    Whether the allocator was tuned.
  """
  if "jax" in sys.modules:
    return False
  return hostmem.tune_allocator()


def prepare() -> None:
  """Logging, allocator and compilation cache, in the order they need."""
  setup_logging()
  tune_allocator_if_early()  # before the cache imports jax
  enable_compilation_cache()
