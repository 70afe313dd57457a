"""E5: shared vs unrelated features, and Caruana's shuffle test.

Claim: MTL helps when the tasks share low-level features. Three conditions,
each with paired MTL and STL arms:
  * mtl_scenes: the four tasks share shapes, colours and edges;
  * mtl_scenes/unrelated: each task's label is carried by its own cue;
  * mtl_scenes with the auxiliary tasks' labels shuffled across examples
    (Caruana 1997): any MTL gain on the target that survives is not transfer.
The target task has few labels so that a gain has room to show.

    mtljax sweep --config experiments/e5_unrelated_tasks.py:quick --workdir w/e5
"""

from mtljax.study import presets

TARGET = 0


def get_config(arg=None):
  v = presets.parse_arg(arg)
  c = presets.base(v)
  c.name = "e5_unrelated_tasks"
  c.data.name = "mtl_scenes"
  c.modes = ("mtl", "stl")
  c.model.encoder = presets.encoder(v)
  c.model.width = 8
  # Only the target's MTL − STL difference is read: STL learns the target.
  c.stl_tasks = (TARGET,)
  target, aux = {"smoke": (50, 500), "quick": (200, 8000),
                 "full": (300, 15000)}[v.name]
  c.data.label_budget = tuple(target if t == TARGET else aux for t in range(4))
  return c


def get_sweep(h, arg=None):
  del arg
  return h.chain(
      h.product([h.fixed("data.name", "mtl_scenes"),
                 h.fixed("data.shuffle_tasks", ())]),
      h.product([h.fixed("data.name", "mtl_scenes/unrelated"),
                 h.fixed("data.shuffle_tasks", ())]),
      h.product([h.fixed("data.name", "mtl_scenes"),
                 h.fixed("data.shuffle_tasks", (1, 2, 3))]),
  )
