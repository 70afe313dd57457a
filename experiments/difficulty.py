"""Dataset difficulty: is mtl_scenes learnable but not saturated?

One small CNN (MTL, width 16) trained on the whole training split, against
the same network with 300 labels per task. The figures quoted in the README
and in mtljax/data/scenes.py come from:

    mtljax sweep --config experiments/difficulty.py --workdir workdirs/difficulty
    mtljax sweep --config experiments/difficulty.py:digits_multilabel \\
        --workdir workdirs/difficulty_digits

The argument is the dataset name (default mtl_scenes).
"""

from mtljax import config as config_lib


def get_config(arg=None):
  c = config_lib.default_config()
  c.name = "difficulty"
  c.data.name = arg or "mtl_scenes"
  c.modes = ("mtl",)
  c.num_seeds = 3
  c.model.encoder = "cnn"
  c.model.width = 16
  c.optimizer.learning_rates = (3e-3,)
  c.optimizer.schedule = "cosine"
  c.train.batch_size = 128
  c.train.steps = 2000
  c.train.eval_every = 250
  c.train.checkpoint_every = 1000
  c.data.eval_examples = 5000
  return c


def get_sweep(h, arg=None):
  del arg
  return h.sweep("data.label_budget", [(300,), (-1,)])
