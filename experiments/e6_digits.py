"""E6: MTL vs STL on real handwriting (scikit-learn's digits, no download).

Canvases of 1-3 real 8×8 digits; ten tasks "digit d is present", which share
stroke features. MTL (one CNN, 10 heads) against 10 single-task CNNs and a
parameter-matched STL (2000 training examples in quick mode, 4000 in full).

    mtljax sweep --config experiments/e6_digits.py:quick --workdir w/e6
"""

from mtljax.study import presets


def get_config(arg=None):
  v = presets.parse_arg(arg)
  c = presets.base(v)
  c.name = "e6_digits"
  c.data.name = "digits_multilabel"
  c.data.split_sizes = {"smoke": (600, 200, 200), "quick": (8000, 1000, 1000),
                        "full": (20000, 2000, 2000)}[v.name]
  c.modes = ("mtl", "stl", "stl_matched")
  c.model.encoder = presets.encoder(v)
  c.model.width = 8
  return c


def get_sweep(h, arg=None):
  v = presets.parse_arg(arg)
  sizes = {"smoke": [300, 600], "quick": [2000],
           "full": [4000]}[v.name]
  return h.sweep("data.train_examples", sizes)
