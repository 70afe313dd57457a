"""E6: MTL vs STL on real handwriting (scikit-learn's digits, no download).

Canvases of 1-3 real 8×8 digits; ten tasks "digit d is present", which share
stroke features. MTL (one CNN, 10 heads) against 10 single-task CNNs of the
same width, a parameter-matched STL and an equal-compute MTL (E1's arms), at
several widths: the digits' evidence for the sharing (C1) and size (C6)
claims.

    mtljax sweep --config experiments/e6_digits.py:quick --workdir w/e6
"""

from mtljax.study import presets


def get_config(arg=None):
  v = presets.parse_arg(arg)
  c = presets.base(v)
  c.name = "e6_digits"
  c.data.name = "digits_multilabel"
  c.data.split_sizes = presets.pick(v, {"smoke": (600, 200, 200),
                                        "quick": (8000, 1000, 1000),
                                        "full": (20000, 2000, 2000)})
  c.modes = ("mtl", "stl", "stl_matched", "mtl_matched")
  c.model.encoder = presets.encoder(v)
  c.model.width = 8
  c.data.train_examples = presets.pick(v, {"smoke": 300, "quick": 2000,
                                           "full": 4000})
  if v.name == "quick":
    c.modes = ("mtl", "stl")  # the quick preview: equal width only
  return c


def get_sweep(h, arg=None):
  v = presets.parse_arg(arg)
  # C6 on digits is the gpu profile's (CPU: width 8, C1's arms).
  widths = presets.pick(v, {"smoke": [4], "quick": [8], "full": [8],
                            "gpu": [4, 8, 16, 32, 64]})
  return h.sweep("model.width", widths)
