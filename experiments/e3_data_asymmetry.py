"""E3: data asymmetry. Claim: a big MTL gain needs far more auxiliary data.

The target task (pedestrian, task 0) gets few labels; the three auxiliary
tasks get as few (1×) or 10–50× more. The report gives the target task's
paired MTL−STL difference per auxiliary budget.

    mtljax sweep --config experiments/e3_data_asymmetry.py:quick --workdir w/e3
"""

from mtljax.study import presets

TARGET = 0  # pedestrian


def budgets(target: int, aux: int) -> tuple:
  return tuple(target if t == TARGET else aux for t in range(4))


def get_config(arg=None):
  v = presets.parse_arg(arg)
  c = presets.base(v)
  c.name = "e3_data_asymmetry"
  c.data.name = "mtl_scenes"
  c.modes = ("mtl", "stl")
  c.model.encoder = presets.encoder(v)
  c.model.width = 8
  # Only the target's MTL − STL difference is read: STL learns the target.
  c.stl_tasks = (TARGET,)
  c.data.label_budget = budgets(*{"smoke": (50, 50), "quick": (200, 200),
                                  "full": (300, 300)}[v.name])
  return c


def get_sweep(h, arg=None):
  v = presets.parse_arg(arg)
  target, auxes = {"smoke": (50, [50, 500]), "quick": (200, [200, 8000]),
                   "full": (300, [300, 3000, 15000])}[v.name]
  return h.sweep("data.label_budget", [budgets(target, a) for a in auxes])
