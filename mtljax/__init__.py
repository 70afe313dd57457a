"""mtljax: rigorous multi-task vs single-task learning studies in JAX/Flax.

From Python (a notebook or a script)::

    import mtljax

    config = mtljax.default_config()
    config.model.encoder, config.train.steps = "mlp", 100
    results = mtljax.train_and_evaluate(config, "/tmp/w")   # results.json's dict
    model = mtljax.load_model("/tmp/w", arm="stl", seed=0)  # best-by-validation
    probs = model.predict(images)                           # {task: [N]}
    summary = mtljax.report(["/tmp/w"], "/tmp/w/report")    # report.md, plots

The whole path reads in one sitting::

    mtljax train --config experiments/e1_mtl_vs_stl.py:quick --workdir /tmp/w
      -> mtljax.config   (load, override, validate)
      -> mtljax.data     (TFDS builders, label controls, grain pipeline)
      -> mtljax.models   (shared encoder + per-task heads; task groups)
      -> mtljax.core.step     (pure, vmapped-over-runs, sharded train step)
      -> mtljax.run.train    (train_and_evaluate: loop, eval, checkpoints)
      -> mtljax.analysis.report   (CIs, paired tests, plots)

`import mtljax` stays light (no jax, TFDS or orbax): the names above are
imported on first use, so that the host allocator can still be tuned before
jax starts (see mtljax/hostmem.py) and `mtljax --help` is instant.
"""

import importlib

__version__ = "0.1.0"

# Public name -> (module, attribute), imported on first access.
_LAZY = {
    "default_config": ("mtljax.config", "default_config"),
    "train_and_evaluate": ("mtljax.run.api", "train_and_evaluate"),
    "load_model": ("mtljax.run.api", "load_model"),
    "report": ("mtljax.run.api", "report"),
}

# Subpackages reachable as attributes (`mtljax.tasks.Binary`,
# `mtljax.data.register_arrays`) without an explicit import.
_SUBPACKAGES = ("config", "data", "methods", "tasks")

__all__ = list(_LAZY) + list(_SUBPACKAGES)


def __getattr__(name: str):
  if name in _SUBPACKAGES:
    return importlib.import_module(f"mtljax.{name}")
  if name not in _LAZY:
    # An AttributeError also lets `from mtljax import <submodule>` fall back
    # to importing the submodule.
    raise AttributeError(f"module 'mtljax' has no attribute {name!r}")
  module, attr = _LAZY[name]
  value = getattr(importlib.import_module(module), attr)
  globals()[name] = value  # later accesses skip __getattr__
  return value


def __dir__():
  return sorted(set(globals()) | set(_LAZY))
