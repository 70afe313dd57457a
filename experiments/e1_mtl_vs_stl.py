"""E1: one multi-task network vs separate single-task networks (the lecture's claim).

Four arms trained side by side on the same batches, label masks and initial
weights (paired by seed):
  * mtl: one CNN of width w with one head per task;
  * stl: one CNN of width w per task (equal width);
  * stl_matched: one CNN per task whose total size ≈ the MTL network (equal
    parameters);
  * mtl_matched: one MTL CNN as wide as its forward FLOPs ≈ the T STL
    networks' (equal compute).
Study v2 judges each kind on its own (mtljax/study/rules.py), on the
synthetic scenes and on real digits (multi_mnist; E6 has scikit-learn's).

    mtljax sweep --config experiments/e1_mtl_vs_stl.py:quick --workdir w/e1

The argument is "variant[,dataset]"; the sweep runs every dataset.
"""

from mtljax.study import presets

DATASETS = ("mtl_scenes", "multi_mnist")


def get_config(arg=None):
  v, dataset = presets.parse_dataset_arg(arg, DATASETS,
                                         "experiments/e1_mtl_vs_stl.py")
  c = presets.base(v)
  c.name = "e1_mtl_vs_stl"
  c.data.name = dataset
  c.modes = ("mtl", "stl", "stl_matched", "mtl_matched")
  c.model.encoder = presets.encoder(v)
  c.model.width = 8
  c.data.train_examples = presets.pick(v, {"smoke": -1, "quick": 2000,
                                           "full": 2000})
  if v.name in ("smoke", "quick"):
    # The smoke variant is the tests' tiny config (and the golden result's):
    # E6's smoke variant covers mtl_matched. The quick preview leaves out
    # its costliest arm (MTL at 2x width); its equal-compute evidence is
    # E2's MTL at width 8 against STL at width 4.
    c.modes = ("mtl", "stl", "stl_matched")
  return c


def get_sweep(h, arg=None):
  v, _ = presets.parse_dataset_arg(arg, DATASETS,
                                   "experiments/e1_mtl_vs_stl.py")
  if v.name == "smoke":
    # The tests' two-point sweep (the path, not the datasets).
    return h.sweep("data.train_examples", [300, 600])
  # The quick preview trains the scenes only.
  datasets = DATASETS if v.name != "quick" else DATASETS[:1]
  return h.sweep("data.name", list(datasets))
