"""mtljax: rigorous multi-task vs single-task learning studies in JAX/Flax.

The whole path reads in one sitting::

    mtljax train --config experiments/mtl_vs_stl.py:quick --workdir /tmp/w
      -> mtljax.config   (load, override, validate)
      -> mtljax.data     (TFDS builders, label controls, grain pipeline)
      -> mtljax.models   (shared encoder + per-task heads; task groups)
      -> mtljax.core.step     (pure, vmapped-over-runs, sharded train step)
      -> mtljax.run.train    (train_and_evaluate: loop, eval, checkpoints)
      -> mtljax.analysis.report   (CIs, paired tests, plots)
"""

__version__ = "0.1.0"
