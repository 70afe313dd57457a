"""E2: network size. Claim: MTL hurts only when the network is too small.

MTL and STL at widths from tiny (1-2 channels) to large; the report plots the
test mean AUC of both against width with CI bands, and the paired MTL−STL
difference against width (the crossover, if any).

    mtljax sweep --config experiments/e2_width_sweep.py:quick --workdir w/e2
"""

from mtljax.study import presets


def get_config(arg=None):
  v = presets.parse_arg(arg)
  c = presets.base(v)
  c.name = "e2_width_sweep"
  c.data.name = "mtl_scenes"
  c.modes = ("mtl", "stl")
  c.model.encoder = presets.encoder(v)
  c.data.train_examples = {"smoke": 600, "quick": 4000, "full": 4000}[v.name]
  return c


def get_sweep(h, arg=None):
  v = presets.parse_arg(arg)
  widths = {"smoke": [1, 4], "quick": [2, 8, 16],
            "full": [2, 8, 16]}[v.name]
  return h.sweep("model.width", widths)
