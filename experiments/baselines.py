"""STL baselines of the mixed-type datasets: what one CNN per task reaches.

One single-task CNN per task (and one MTL CNN beside it, paired by seed),
trained on the whole training split with the same budget and learning-rate
grid for both arms. The README's baseline table comes from:

    mtljax train --config experiments/baselines.py:multi_mnist \\
        --workdir workdirs/baselines_multi_mnist
    mtljax train --config experiments/baselines.py:mtl_scenes/attributes \\
        --workdir workdirs/baselines_attributes
    mtljax report workdirs/baselines_multi_mnist --out workdirs/baselines_multi_mnist
    mtljax report workdirs/baselines_attributes --out workdirs/baselines_attributes

The argument is the dataset name (default multi_mnist). Each task is reported
in its own metric: accuracy (multiclass), AUC (binary), R² (regression).
"""

from mtljax import config as config_lib


def get_config(arg=None):
  c = config_lib.default_config()
  c.name = "baselines"
  c.data.name = arg or "multi_mnist"
  c.modes = ("mtl", "stl")
  c.num_seeds = 3
  c.model.encoder = "cnn"
  c.model.width = 16
  c.optimizer.learning_rates = (3e-3,)  # one rate, the same for both arms
  c.optimizer.schedule = "cosine"
  c.train.batch_size = 128
  c.train.steps = 1000
  c.train.eval_every = 250
  c.train.log_every = 250
  c.train.checkpoint_every = 500
  c.data.eval_examples = 5000
  return c


def get_sweep(h, arg=None):
  """Both datasets in one sweep: `mtljax sweep --config
  experiments/baselines.py --workdir workdirs/baselines`."""
  del arg
  return h.sweep("data.name", ["multi_mnist", "mtl_scenes/attributes"])
