"""E1: one multi-task network vs separate single-task networks (the lecture's claim).

MTL (one CNN of width w, 4 heads) against STL (4 CNNs of width w, one per task)
and a parameter-matched STL (4 CNNs whose total size ≈ the MTL network), all
trained side by side on the same batches, label masks and initial weights
(paired by seed), at several training-set sizes.

    mtljax sweep --config experiments/e1_mtl_vs_stl.py:quick --workdir w/e1
"""

from mtljax.study import presets


def get_config(arg=None):
  v = presets.parse_arg(arg)
  c = presets.base(v)
  c.name = "e1_mtl_vs_stl"
  c.data.name = "mtl_scenes"
  c.modes = ("mtl", "stl", "stl_matched")
  c.model.encoder = presets.encoder(v)
  c.model.width = 8
  return c


def get_sweep(h, arg=None):
  v = presets.parse_arg(arg)
  sizes = {"smoke": [300, 600], "quick": [2000],
           "full": [500, 2000, 8000]}[v.name]
  return h.sweep("data.train_examples", sizes)
