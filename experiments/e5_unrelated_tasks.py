"""E5: shared vs unrelated features, and Caruana's shuffle test (controls).

Claim C3: MTL helps when the tasks share low-level features. Study v2
judges it as a contrast: (MTL − STL on the target with the real auxiliary
tasks, from E3) minus (the same with control auxiliary tasks), per seed, at
the same target difficulty. This file trains the controls, with E3's
target design (every task in turn the target, fixed exposure, selection on
the target, the summed loss):
  * mtl_scenes/unrelated: each task's label is carried by its own cue, so
    the auxiliary tasks share no feature with the target;
  * mtl_scenes with the auxiliary tasks' labels shuffled across examples
    (Caruana 1997): the same images and target, auxiliary labels that carry
    no information.

    mtljax sweep --config experiments/e5_unrelated_tasks.py:quick --workdir w/e5
"""

from mtljax.study import presets

NUM_TASKS = 4
# E3's target size at which the controls are trained (one of E3's SIZES).
SIZE = {"smoke": 20, "quick": 100, "full": 100, "gpu": 300}
TARGETS = {"smoke": [0], "quick": [0, 2], "full": [0, 1, 2, 3]}  # as E3's


def get_config(arg=None):
  v = presets.parse_arg(arg)
  c = presets.target_base(v, "mtl_scenes/unrelated", NUM_TASKS,
                          presets.pick(v, SIZE))
  c.name = "e5_unrelated_tasks"
  return c


def get_sweep(h, arg=None):
  v = presets.parse_arg(arg)
  n = presets.pick(v, SIZE)
  points = []
  for t in presets.pick(v, TARGETS):
    others = tuple(k for k in range(NUM_TASKS) if k != t)
    controls = (("mtl_scenes/unrelated", ()), ("mtl_scenes", others))
    # The CPU runs train the unrelated control (C3's rule); the gpu
    # profile adds the shuffled one.
    for name, shuffle in controls if v.name in ("gpu", "smoke") else (
        controls[:1]):
      points.append(h.product([
          h.fixed("data.name", name), h.fixed("data.shuffle_tasks", shuffle),
          h.fixed("stl_tasks", (t,)), h.fixed("train.selection_tasks", (t,)),
          h.fixed("data.label_budget",
                  presets.target_budget(NUM_TASKS, t, n, -1))]))
  return h.chain(*points)
