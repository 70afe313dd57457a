"""E4: missing labels. The lecture's rule (sum only over observed labels) against
treating "?" as negative and against dropping every example with any "?".

30-70% of the training labels are "?". The three policies are arms of one
program (paired by seed); the report compares each with the masked loss.

    mtljax sweep --config experiments/e4_missing_labels.py:quick --workdir w/e4
"""

from mtljax.study import presets


def get_config(arg=None):
  v = presets.parse_arg(arg)
  c = presets.base(v)
  c.name = "e4_missing_labels"
  c.data.name = "mtl_scenes"
  c.modes = ("mtl",)
  c.loss.missing_policies = ("mask", "negative", "drop")
  c.model.encoder = presets.encoder(v)
  c.model.width = 8
  c.data.train_examples = presets.pick(v, {"smoke": 600, "quick": 4000,
                                           "full": 4000})
  if v.target_learning_rates:
    # v1 found the masked loss ahead by 0.06-0.19 AUC: the CPU study spends
    # its third grid point elsewhere.
    c.optimizer.learning_rates = v.target_learning_rates
  c.data.label_fraction = (0.5,)
  return c


def get_sweep(h, arg=None):
  v = presets.parse_arg(arg)
  kept = presets.pick(v, {"smoke": [0.5], "quick": [0.5], "full": [0.7, 0.3]})
  return h.sweep("data.label_fraction", [(k,) for k in kept])
