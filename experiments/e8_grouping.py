"""E8: which tasks should be learned together? Every grouping, pairs and TAG.

The seed says MTL makes sense when the tasks share low-level features. The
field's test of that is grouping search (Standley et al. 2020; Fifty et al.
2021): train a network on task groups and choose the best partition of the
tasks into b networks. One config trains, side by side in one compiled
program per width and paired by seed (same batches, label masks and initial
weights):
  * every non-empty task group (config.grouping.groups="all": 2^T − 1
    networks; MTL's group of all tasks and STL's single tasks among them),
    or, for T = 10, only the 1- and 2-task groups ("pairs": 55 networks;
    the 1,023 groups are a GPU job, `:full` raises max_tasks);
  * TAG's lookahead affinity, measured in the MTL runs every 10 steps.
The report's grouping section then gives the best selection of groups for
b = 1..T networks from the exhaustive table, from the pairs alone (HOA) and
from the affinity (TAG), their regret against the exhaustive answer, and
their test Δm against STL and difference against MTL, paired by seed:

    mtljax train --config experiments/e8_grouping.py:quick,mtl_scenes \\
        --workdir w/e8_scenes
    mtljax report w/e8_scenes --out w/e8_scenes
    mtljax sweep --config experiments/e8_grouping.py:quick --workdir w/e8
    python scripts/make_grouping_doc.py w/e8     # docs/results/grouping/E8.md

The argument is "variant[,dataset]": variant smoke, quick or full; dataset
one of DATASETS (default mtl_scenes). `mtl_scenes/unrelated` is the
control: its tasks share no features by construction, so its affinities
should be near zero or negative and no grouping should beat STL.
`celeb_a9` / `celeb_a40` (TAG's own benchmark: 9 attributes, or all 40)
need a prepared TFDS copy of CelebA (experiments/celeb_a.py) and are not in
the sweep.
"""

from mtljax.study import presets

DATASETS = ("mtl_scenes", "mtl_scenes/unrelated", "mtl_scenes/attributes",
            "digits_multilabel", "multi_mnist")
CELEB_A = ("celeb_a9", "celeb_a40")
# TAG's nine CelebA attributes (Fifty et al. 2021, section 5.1).
CELEB_A9 = ("5_o_Clock_Shadow", "Black_Hair", "Blond_Hair", "Brown_Hair",
            "Goatee", "Mustache", "No_Beard", "Rosy_Cheeks", "Wearing_Hat")


def _parse(arg):
  return presets.parse_dataset_arg(arg, DATASETS + CELEB_A,
                                   "experiments/e8_grouping.py")


def _groups(variant: str, dataset: str) -> str:
  """Every group for T <= 5; for T = 9 or 10 the 2^T - 1 groups are a GPU
  job (`:full` trains all 1,023 on digits), so pairs and TAG only; for
  CelebA's 40 attributes TAG only."""
  if dataset == "celeb_a40":
    return ""
  if dataset in ("digits_multilabel", "celeb_a9"):
    return "all" if (variant in ("full", "gpu")
                      and dataset == "digits_multilabel") else "pairs"
  return "all"


def get_config(arg=None):
  v, dataset = _parse(arg)
  c = presets.base(v)
  c.name = "e8_grouping"
  c.data.name = dataset
  c.modes = ("mtl", "stl")
  c.model.encoder = presets.encoder(v)
  c.model.width = 8
  # The mean of the task losses: a group's network weighs its tasks alike
  # whatever its size (the per-example sum would favour tasks with more
  # labels, and groups with more tasks).
  c.loss.normalize = "per_task"
  if dataset.startswith("celeb_a"):
    names = CELEB_A9 if dataset == "celeb_a9" else ("*",)
    c.data.name = "tfds:celeb_a"
    c.data.split_sizes = ()
    c.data.tfds.tasks = tuple((f"attributes/{n}", "binary") for n in names)
    c.data.tfds.resize = (32, 32) if v.name == "smoke" else (64, 64)
    c.model.width = 16
    c.train.batch_size = 16 if v.name == "smoke" else 128
    c.train.steps = presets.pick(v, {"smoke": 6, "quick": 2000,
                                     "full": 10000})
    c.train.eval_every = max(c.train.steps // 10, 3)
    c.train.checkpoint_every = max(c.train.steps // 5, 3)
    c.data.eval_examples = 5000
  c.grouping.groups = _groups(v.name, dataset)
  c.grouping.max_tasks = 10 if v.name in ("full", "gpu") else 5
  c.grouping.affinity_every = 2 if v.name == "smoke" else 10
  return c


def get_sweep(h, arg=None):
  """Every generated dataset: `mtljax sweep --config ...e8_grouping.py:quick`."""
  v, _ = _parse(arg)
  names = ["mtl_scenes"] if v.name == "smoke" else list(DATASETS)
  return h.zip([h.sweep("data.name", names),
                h.sweep("grouping.groups", [_groups(v.name, n)
                                            for n in names])])
