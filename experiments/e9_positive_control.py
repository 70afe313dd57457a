"""E9: the positive control. Can MTL beat STL on data built for sharing?

If MTL cannot help a low-label target where the tasks share their features
by construction, a null or negative result elsewhere says little about the
lecture's claims (docs/RESULTS.md says so plainly if it happens). Two
datasets:
  * mtl_scenes/attributes: four tasks of mixed types read off the same
    street objects (pedestrian present, number of cars, traffic-light state,
    stop sign position), so they share detectors by construction;
  * multi_mnist: real MNIST digits, left and right digit, one recogniser.
E3's target design: every task in turn has few labels and the others have
all, exposure fixed, each network selected on the target. The loss is the
per-task mean (mixed types: a regression's squared error and a
classification's cross-entropy are not on one scale).

    mtljax sweep --config experiments/e9_positive_control.py:quick --workdir w/e9
"""

from mtljax.study import presets

DATASETS = {"mtl_scenes/attributes": 4, "multi_mnist": 2}
# 300 on a CPU: at 100 labels the quick preview's STL was at the floor.
SIZES = {"smoke": [20], "quick": [100], "full": [300], "gpu": [100, 300]}


def get_config(arg=None):
  v = presets.parse_arg(arg)
  c = presets.target_base(v, "mtl_scenes/attributes", 4,
                          presets.pick(v, SIZES)[0])
  c.name = "e9_positive_control"
  c.loss.normalize = "per_task"
  return c


def get_sweep(h, arg=None):
  v = presets.parse_arg(arg)
  # The quick preview (and smoke) train the real digits only.
  datasets = (DATASETS if v.name not in ("smoke", "quick")
              else {"multi_mnist": 2})
  points = []
  for name, num_tasks in datasets.items():
    for t in range(num_tasks):
      for n in presets.pick(v, SIZES):
        points.append(h.product([
            h.fixed("name", "e9_" + name.replace("/", "_")),
            h.fixed("data.name", name), h.fixed("stl_tasks", (t,)),
            h.fixed("train.selection_tasks", (t,)),
            h.fixed("data.label_budget",
                    presets.target_budget(num_tasks, t, n, -1))]))
  return h.chain(*points)
