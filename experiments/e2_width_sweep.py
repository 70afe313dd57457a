"""E2: network size. Claim: MTL hurts only when the network is too small.

MTL and STL at widths from small to where STL plateaus (study v2's rule C6
judges MTL − STL only at widths where doubling the width gains STL less
than the equivalence margin), on the synthetic scenes and on real digits
(multi_mnist). The report plots the test metric of both arms against width
with CI bands, and the paired MTL − STL difference against width. Adjacent
widths also give the equal-compute comparison MTL at 2w against STL at w,
paired by seed across conditions.

A training-steps axis ("steps") trains width 8 for fewer (and, on a GPU,
more) steps: whether MTL's deficit is slower learning or a worse end
point. Every report also draws the validation learning curves.

A branching axis ("share_k", full and gpu only) trains MTL at width 8 with
only the first k of the 3 conv stages shared (model.arch "share_k"), beside
STL: whether the deficit of full sharing (k = 3, the width points) comes
from sharing the late, task-specific stages. It is reported, not judged
(C6 reads the width points only).

    mtljax sweep --config experiments/e2_width_sweep.py:quick --workdir w/e2
    mtljax train --config experiments/e2_width_sweep.py:quick,multi_mnist \
        --workdir w/e2_one   # the sweep's base config for one dataset

The argument is "variant[,dataset]"; dataset mtl_scenes (default),
multi_mnist, or "steps" (the steps axis on mtl_scenes). The sweep runs all
three, each as its own experiment (its own report section and plots).
"""

from mtljax.study import presets

DATASETS = ("mtl_scenes", "multi_mnist", "steps")
# Width 64 costs ~13x width 8 per step on a 2-core CPU: the gpu profile's.
WIDTHS = {"smoke": [1, 4], "quick": [4, 8], "full": [8, 16, 32],
          "gpu": [8, 16, 32, 64, 128]}
STEPS = {"smoke": [3], "quick": [100], "full": [200, 400],
         "gpu": [200, 400, 1600, 3200]}
# Shared stages k of the branching axis (depth 3; k = 3 is the width points').
SHARED_STAGES = {"smoke": [], "quick": [], "full": [1, 2], "gpu": [1, 2]}


def _parse(arg):
  return presets.parse_dataset_arg(arg, DATASETS,
                                   "experiments/e2_width_sweep.py")


def get_config(arg=None):
  v, dataset = _parse(arg)
  c = presets.base(v)
  c.name = "e2_width_sweep" if dataset != "steps" else "e2_steps"
  c.data.name = "mtl_scenes" if dataset == "steps" else dataset
  c.modes = ("mtl", "stl")
  c.model.encoder = presets.encoder(v)
  c.model.width = 8
  c.data.train_examples = presets.pick(v, {"smoke": 600, "quick": 4000,
                                           "full": 4000})
  return c


def _steps_points(h, v):
  steps = presets.pick(v, STEPS)
  return h.product([
      h.fixed("name", "e2_steps"), h.fixed("data.name", "mtl_scenes"),
      h.zip([h.sweep("train.steps", steps),
             h.sweep("train.checkpoint_every", [max(s // 2, 1) for s in steps]),
             h.sweep("train.eval_every", [min(v.eval_every, s) for s in steps]),
             h.sweep("train.log_every", [max(1, min(50, s // 5))
                                         for s in steps])])])


def _share_k_points(h, v):
  ks = presets.pick(v, SHARED_STAGES)
  if not ks:
    return []
  # No model.width in the point: the width-8 base, and C6's width reading
  # (study/claims.py) leaves these conditions out.
  return h.product([
      h.fixed("name", "e2_share_k"), h.fixed("data.name", "mtl_scenes"),
      h.fixed("model.arch", "share_k"),
      h.sweep("model.arch_kwargs.shared_stages", ks)])


def get_sweep(h, arg=None):
  v, _ = _parse(arg)
  widths = presets.pick(v, WIDTHS)
  datasets = (["mtl_scenes", "multi_mnist"]
              if v.name not in ("smoke", "quick") else ["mtl_scenes"])
  parts = [h.product([h.fixed("name", f"e2_width_sweep_{d}"),
                      h.fixed("data.name", d),
                      h.sweep("model.width", widths)]) for d in datasets]
  # The quick preview has no steps axis (its learning curves show the
  # trend).
  steps = [] if v.name == "quick" else _steps_points(h, v)
  return h.chain(*parts, steps, _share_k_points(h, v))
