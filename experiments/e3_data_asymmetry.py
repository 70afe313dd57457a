"""E3: data asymmetry. Claim: a big MTL gain needs far more auxiliary data.

Study v2's design (docs/RESULTS.md, "Study v2"):
  * every task in turn is the low-label target, so none is picked;
  * the target has 100, 300 or 1,000 labels and the auxiliary tasks have as
    many ("equal") or every training example labelled ("all");
  * exposure is fixed: the training set has steps x batch / 8 examples, so
    the target's labels are seen 8 times whatever their count (v1 spread
    300 labels over 20,000 images: 1.3 passes);
  * every network's checkpoint and learning rate are chosen on the
    target's validation score (`train.selection_tasks`);
  * three MTL losses: the lecture's summed loss (`per_example`, which gives
    the target ~3% of the loss at 100 vs 3,200 labels), the per-task mean
    (`per_task`: 1/T each), and a target-weighted loss (the `target`
    weighting: half of the weights on the target). The last two are one
    program, at "all" (with "equal" labels the summed loss already weighs
    the tasks alike).
STL learns the target only (`stl_tasks`). E5 adds the unrelated and
shuffled controls at the same target difficulty, and the grouping issue's
pair matrix (the target with one auxiliary task at a time) is E3's "pairs"
variant: `experiments/e3_data_asymmetry.py:full,pairs`.

    mtljax sweep --config experiments/e3_data_asymmetry.py:quick --workdir w/e3
"""

from mtljax.study import presets

NUM_TASKS = 4  # mtl_scenes
# The CPU study trains 100 target labels (about 3 minutes per condition on
# 2 cores); the gpu profile trains 100, 300 and 1,000.
SIZES = {"smoke": [20], "quick": [100], "full": [100],
         "gpu": [100, 300, 1000]}
# The quick preview trains two of the four targets (the hardest task and
# the one v1's probe found most hurt); the full study trains every one.
TARGETS = {"smoke": [0], "quick": [0, 2], "full": [0, 1, 2, 3]}


def _parse(arg):
  return presets.parse_dataset_arg(
      arg, ("mtl_scenes", "pairs"), "experiments/e3_data_asymmetry.py")


def get_config(arg=None):
  v, variant = _parse(arg)
  c = presets.target_base(v, "mtl_scenes", NUM_TASKS,
                          presets.pick(v, SIZES)[0])
  c.name = "e3_data_asymmetry" if variant != "pairs" else "e3_pairs"
  if variant == "pairs":
    # The pair matrix: every group of one or two tasks (the target with one
    # auxiliary task at a time), beside MTL on all four and STL.
    c.grouping.groups = "pairs"
    c.stl_tasks = ()
  return c


def target_fields(t: int) -> dict:
  """The fields that make task t the target."""
  return {"stl_tasks": (t,), "train.selection_tasks": (t,)}


def _point(h, fields: dict):
  return h.product([h.fixed(k, val) for k, val in fields.items()])


def get_sweep(h, arg=None):
  v, variant = _parse(arg)
  points = []
  for t in presets.pick(v, TARGETS):
    for n in presets.pick(v, SIZES):
      if variant == "pairs":
        # The same target labels, auxiliary tasks fully labelled; every
        # 1- and 2-task network selects on the target where it has it.
        points.append(_point(h, {
            "train.selection_tasks": (t,),
            "data.label_budget": presets.target_budget(NUM_TASKS, t, n, -1)}))
        continue
      for aux in ("equal", "all"):
        budget = presets.target_budget(NUM_TASKS, t, n,
                                       n if aux == "equal" else -1)
        points.append(_point(h, {**target_fields(t),
                                 "data.label_budget": budget,
                                 "loss.normalize": "per_example",
                                 "method_arms": ()}))
        # The other losses: at every size in the gpu profile, at the
        # scarcest target on a CPU (where the summed loss gives it least).
        if aux == "all" and (v.name in ("gpu", "smoke") or (
            v.name == "full" and n == min(presets.pick(v, SIZES)))):
          points.append(_point(h, {
              **target_fields(t), "data.label_budget": budget,
              "loss.normalize": "per_task",
              "method_arms": (("target_weighted", {
                  "weighting": "target",
                  "weighting_hparams": {"task": float(t), "share": 0.5}}),)}))
  return h.chain(*points)
