"""The config schema: every field with its default, validation, comparisons.

Every field is checked against `default_config()` before anything compiles:
an unknown or misspelled key, a wrong type or an impossible value raises
ConfigError naming the field and the value. Component names are checked
against their registries (mtljax/registry.py), and a component's own
settings (an open sub-config such as `model.encoder_kwargs`) against its
constructor's signature.

The checks that `validate` calls (a field's type, unknown fields, and the
cross-field checks of partitions, the selection metric and data.tfds) are
in checks.py.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from mtljax import errors
from mtljax.config.checks import _check_method
from mtljax.config.checks import _check_method_arms
from mtljax.config.checks import _check_grouping
from mtljax.config.checks import _check_partitions
from mtljax.config.checks import _check_selection_metric
from mtljax.config.checks import _check_tfds
from mtljax.config.checks import _coerce
from mtljax.config.checks import _unknown
from mtljax.config.checks import tfds_options  # noqa: F401 (re-exported)


ConfigError = errors.ConfigError


def default_config() -> ml_collections.ConfigDict:
  """Every config field, with its default. Experiments start from this."""
  c = ml_collections.ConfigDict()
  c.name = "experiment"             # experiment name, recorded in results.json
  c.seed = 0                        # first seed; runs use seed .. seed+num_seeds-1
  c.num_seeds = 3                   # seeds, vmapped: one compilation for all
  # Arms trained side by side on the same batches (paired by seed): "mtl" (one
  # shared encoder), "stl" (T single-task networks of the same width) and
  # "stl_matched" (T single-task networks whose total size ≈ the MTL network)
  # and "mtl_matched" (one MTL network as wide as costs ≈ the T STL networks'
  # forward FLOPs: equal compute).
  c.modes = ("mtl", "stl")
  # Tasks (indices) that the STL arms learn; (): all. Experiments that only
  # read one target task's MTL−STL difference skip the other T−1 networks.
  c.stl_tasks = ()
  # More arms, each any partition of (some of) the tasks into groups, one
  # network per group: (("pairs", ((0, 1), (2, 3))),) trains two networks
  # of two tasks each, beside the modes above and paired with them by seed.
  c.partitions = ()
  c.arm_suffix = ""                 # results arm = mode + suffix, e.g. "mtl_negative"
  c.num_devices = 0                 # 0: all devices on the "data" mesh axis

  c.data = ml_collections.ConfigDict()
  c.data.name = "mtl_scenes"        # see `mtljax data list`
  c.data.data_dir = ""              # "": $TFDS_DATA_DIR, else TFDS's default
  c.data.train_examples = -1        # first N training examples (-1: all)
  c.data.eval_examples = -1         # cap on validation/test examples (-1: all)
  c.data.label_fraction = (-1.0,)   # per task (or one value): kept fraction; -1: all
  c.data.label_budget = (-1,)       # per task (or one value): labelled examples; -1: all
  c.data.shuffle_tasks = ()         # task indices whose labels are shuffled (Caruana)
  c.data.split_sizes = ()           # (train, val, test) to build; (): the dataset's default
  # Hold the training images in memory ("auto": when at most 1 GiB of uint8)
  # or stream each batch's records from the files; the batches are the same.
  c.data.in_memory = "auto"         # "auto", "always", "never"
  # The data's identity (build config and version; for arrays, the hash of
  # their content). "": filled in when a run starts, so that a workdir is
  # never resumed on other data under the same name; set it to pin one.
  c.data.version = ""
  # For data.name = "tfds:<name>": a TFDS dataset prepared once with
  # `tfds build <name> --file_format=array_record` (see the README).
  c.data.tfds = ml_collections.ConfigDict()
  # (feature path pattern, task type) pairs, e.g. (("attributes/*", "binary"),)
  # for celeb_a's 40 attributes or (("label", "multiclass"),).
  c.data.tfds.tasks = ()
  c.data.tfds.image = "image"       # the image feature's path
  c.data.tfds.resize = ()           # (H, W) to resize to; (): as stored
  # (our split, TFDS split) pairs, e.g. (("validation", "train[90%:]"),);
  # splits not listed keep their names.
  c.data.tfds.splits = ()

  c.model = ml_collections.ConfigDict()
  c.model.arch = "hps"              # registry.ARCHITECTURES: "hps" (all shared)
  # The architecture's own settings (checked against its signature), e.g.
  # {"shared_stages": 1} for "share_k", {"num_experts": 4} for "mmoe".
  c.model.arch_kwargs = ml_collections.ConfigDict()
  c.model.encoder = "cnn"           # registry.ENCODERS: "cnn", "mlp", yours
  # The encoder's own settings, passed to its constructor as keyword
  # arguments and checked against its signature, e.g. {"pool": "avg"} for
  # the CNN (2x2 and global pooling: "max", the default, or "avg").
  c.model.encoder_kwargs = ml_collections.ConfigDict()
  c.model.width = 16                # the size knob: hidden units / base channels
  c.model.depth = 3                 # layers (mlp) or conv stages (cnn)
  c.model.head_hidden = 0           # per-task hidden units in each head (0: linear)
  c.model.dropout = 0.0
  c.model.dtype = "float32"         # compute dtype: "float32" or "bfloat16"

  c.loss = ml_collections.ConfigDict()
  # registry.LOSS_WEIGHTINGS: "per_example" (the lecture's), "per_label",
  # "per_task" (see tasks/losses.py).
  c.loss.normalize = "per_example"
  # Static per-task weights c_t (one per task, >= 0; (): all 1): the loss is
  # sum_t c_t * loss_t, with loss_t task t's term under loss.normalize.
  c.loss.task_weights = ()
  # How "?" labels are treated; each policy is a separate arm trained side by
  # side ("mask": the lecture's rule; "negative": "?" = 0; "drop": drop examples
  # with any "?"). Arms other than "mask" are named e.g. "mtl_negative".
  c.loss.missing_policies = ("mask",)

  # How the tasks are combined (mtljax.methods, docs/METHODS.md). Both act
  # on the per-task terms loss_t of loss.normalize (times loss.task_weights);
  # their sum is the default loss. A weighting sets per-step weights w_t
  # and the step takes one backward pass of sum_t w_t loss_t; an aggregator
  # combines the per-task gradients of the shared parameters. A run with one
  # task (STL) is trained exactly as without a method.
  c.method = ml_collections.ConfigDict()
  c.method.weighting = "static"     # registry.WEIGHTINGS: "static", "uw", "dwa", ...
  c.method.aggregator = "none"      # registry.AGGREGATORS, or "none": one backward pass
  # Aggregate the gradients of the shared representation (the encoder's
  # output, per example) instead of the shared parameters: one backward
  # pass through the encoder instead of T (docs/METHODS.md, "rep_grad").
  c.method.rep_grad = False
  # The methods' own hyperparameters, e.g. {"c": 0.4} for CAGrad or
  # {"temperature": 2.0} for DWA; numbers are per-run values.
  c.method.weighting_hparams = ml_collections.ConfigDict()
  c.method.aggregator_hparams = ml_collections.ConfigDict()
  # More MTL arms, one per method, trained side by side with the others and
  # paired with them by seed: (("pcgrad", {"aggregator": "pcgrad"}),
  # ("uw", {"weighting": "uw"})) adds arms "pcgrad" and "uw", each one
  # network on all tasks with that method (fields as in config.method). A
  # tuple of floats is a grid: {"aggregator_hparams": {"c": (0.2, 0.8)}}
  # gives arms "cagrad_c0.2" and "cagrad_c0.8" in one compiled program.
  c.method_arms = ()

  # Which tasks to learn together (docs/GROUPING.md). More task groups,
  # trained as runs beside the arms and paired with them by seed, each its
  # own arm "g_<task indices>": "all" is every non-empty group (2^T - 1
  # networks; Standley et al. 2020), "pairs" every group of one or two tasks
  # (their pairwise estimate); "": none. A group an arm already trains (MTL,
  # STL) is not trained twice. The report's grouping section then searches
  # the best partition by budget.
  c.grouping = ml_collections.ConfigDict()
  c.grouping.groups = ""
  c.grouping.max_tasks = 5          # groups="all" is refused above this T
  # TAG (Fifty et al. 2021): every k steps each MTL run measures the
  # lookahead affinity Z[i->j] = 1 - L_j(after a step on task i) / L_j; 0: off.
  c.grouping.affinity_every = 0
  c.grouping.lookahead_lr = 0.0     # the lookahead's SGD step; 0: the run's rate
  # Budgets of the report's partition search beside 1..T networks: total
  # parameters, and total forward FLOPs per example, of the chosen networks.
  c.grouping.param_budgets = ()
  c.grouping.flop_budgets = ()

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"         # registry.OPTIMIZERS: "adam", "adamw", "sgd"
  c.optimizer.learning_rates = (1e-3,)  # grid, same for every mode; picked on val
  # registry.SCHEDULES: "constant", "cosine", "warmup_cosine"
  c.optimizer.schedule = "constant"
  c.optimizer.warmup_steps = 0
  c.optimizer.weight_decay = 0.0    # adamw only
  c.optimizer.momentum = 0.9        # sgd only
  c.optimizer.grad_clip_norm = 0.0  # 0: no clipping

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128          # global batch, split over devices
  c.train.steps = 1000
  c.train.eval_every = 100          # validation + best-checkpoint selection
  c.train.log_every = 50
  c.train.checkpoint_every = 200
  c.train.keep_checkpoints = 2
  # Validation metric that selects each run's best checkpoint: a metric every
  # task has ("auc", "ap", "acc", "loss" for binary tasks; "r2", "mse", ...;
  # lower-is-better ones are negated), or "primary": the mean over the run's
  # tasks of each task's own primary metric (AUC, accuracy, R²), the scalar
  # for mixed task types. "": the tasks' common primary metric (AUC for
  # binary tasks), or "primary" for mixed types, resolved when a run starts.
  c.train.selection_metric = ""
  # Tasks (indices) whose validation metric selects each run's checkpoint
  # and each network's learning rate (in target experiments: the target);
  # a network that learns none of them selects by its own tasks. (): each
  # network by all of its tasks.
  c.train.selection_tasks = ()
  c.train.nonfinite_policy = "halt"  # "halt" or "skip"
  # Under "skip": warn (log, results.json, report.md) when a run skipped more
  # than this share of its steps.
  c.train.warn_skipped_share = 0.1
  c.train.progress = "auto"         # "auto" (bar on a tty), "bar", "log", "none"
  # How the [seeds, groups] runs are mapped in the step: "vmap" (one batched
  # program), "scan" (one run at a time, by a loop inside the jit), "unroll"
  # (R copies in one jit; slow to compile) or "auto" (core/run_map.py:
  # vmap on accelerators, scan for convolutional encoders on CPU).
  # Results agree up to float rounding.
  c.train.run_map = "auto"
  # Under "scan": compute the first CNN stage of all runs of a seed as one
  # wide convolution (core/stem.py; same results up to float rounding).
  c.train.fuse_stem = True
  return c


# "?"-label treatments, in the order of the integer code a run carries.
MISSING_POLICIES = ("mask", "negative", "drop")
# How the [seeds, groups] runs are mapped inside the step (core/run_map.py).
RUN_MAPS = ("vmap", "unroll", "scan")
# What mtljax passes to every architecture itself (models/multitask._build).
ARCH_PROVIDED = ("encoder", "width", "depth", "num_tasks", "image_shape",
                 "head_hidden", "dropout", "encoder_kwargs", "dtype",
                 "outputs_per_task", "rngs")
# Fixed choices. Components (encoders, optimizers, ...) are not listed here:
# their fields are checked against their registries (_REGISTRY_FIELDS).
_CHOICES = {
    "modes": ("mtl", "stl", "stl_matched", "mtl_matched"),
    "model.dtype": ("float32", "bfloat16"),
    "loss.missing_policies": MISSING_POLICIES,
    "data.in_memory": ("auto", "always", "never"),
    "train.nonfinite_policy": ("halt", "skip"),
    "train.progress": ("auto", "bar", "log", "none"),
    "train.run_map": ("auto",) + RUN_MAPS,
    "grouping.groups": ("", "all", "pairs"),
}
_REGISTRY_FIELDS = {
    "model.arch": "ARCHITECTURES",
    "model.encoder": "ENCODERS",
    "loss.normalize": "LOSS_WEIGHTINGS",
    "optimizer.name": "OPTIMIZERS",
    "optimizer.schedule": "SCHEDULES",
}
# Open sub-configs: any key, passed to a component as keyword arguments and
# checked against its signature. {field: (registry, field naming it, what
# mtljax passes itself)}.
OPEN_FIELDS = {
    "model.encoder_kwargs": ("ENCODERS", "model.encoder",
                             ("in_shape", "width", "depth", "dropout", "dtype",
                              "rngs")),
    "model.arch_kwargs": ("ARCHITECTURES", "model.arch", ARCH_PROVIDED),
}
# Open sub-configs of the methods, checked by checks._check_method.
METHOD_OPEN_FIELDS = ("method.weighting_hparams", "method.aggregator_hparams")
_POSITIVE = ("num_seeds", "model.width", "model.depth", "train.batch_size",
             "train.steps", "train.eval_every", "train.log_every",
             "train.checkpoint_every", "train.keep_checkpoints",
             "grouping.max_tasks")
_NON_NEGATIVE = ("seed", "num_devices", "model.head_hidden",
                 "optimizer.warmup_steps", "optimizer.weight_decay",
                 "optimizer.grad_clip_norm", "optimizer.momentum",
                 "grouping.affinity_every", "grouping.lookahead_lr")


# Fields that change how a run is displayed or kept, not what it computes: a
# resume, or a rerun into a finished workdir, with other values of these is
# allowed. nonfinite_policy only acts once a step is non-finite, and a halted
# run is meant to be resumed with "skip" (the halt message says so).
COSMETIC_FIELDS = ("name", "data.data_dir", "data.in_memory", "train.progress",
                   "train.log_every", "arm_suffix", "train.run_map",
                   "train.fuse_stem", "train.nonfinite_policy",
                   "train.keep_checkpoints",
                   "train.warn_skipped_share", "grouping.param_budgets",
                   "grouping.flop_budgets")


# Fields that a run fills in from its dataset (`run/preflight.resolve`).
_RESOLVED_AT_START = ("data.version",)


# Fields removed from the schema, with the value that meant "what is done
# now" (model.pool became the CNN's encoder_kwargs.pool, default "max").
_OBSOLETE = {"model.pool": "max"}


def _flatten(cfg, prefix="") -> dict[str, Any]:
  out = {}
  for k, v in cfg.items():
    key = f"{prefix}{k}"
    if isinstance(v, ml_collections.ConfigDict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def _is_open(key: str) -> bool:
  return any(key.startswith(f + ".")
             for f in tuple(OPEN_FIELDS) + METHOD_OPEN_FIELDS)


def open_kwargs(cfg, field: str) -> dict:
  """The keyword arguments held by an open sub-config (plain python values)."""
  node = cfg
  for part in field.split("."):
    node = node[part]
  return to_dict(node)


def flatten_dict(d: dict, prefix: str = "") -> dict[str, Any]:
  """{dotted key: value} of a nested plain dict (a config read from JSON)."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten_dict(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _json_form(v):
  # JSON turns tuples into lists: compare configs in their JSON form.
  if isinstance(v, (tuple, list)):
    return [_json_form(x) for x in v]
  return v


def differences(ours: dict, theirs: dict) -> list[tuple[str, Any, Any]]:
  """Computational fields in which two flat configs differ.

  Args:
    ours: {dotted key: value} of this config.
    theirs: the same of another run (e.g. read back from JSON).

  Returns:
    [(key, our value, their value)] sorted by key, ignoring COSMETIC_FIELDS.
    A field that `theirs` lacks (it predates the field) counts as equal when
    ours holds the field's default.
  """
  defaults = _flatten(default_config())
  out = []
  for k in sorted(set(ours) | set(theirs)):
    if k in COSMETIC_FIELDS:
      continue
    if k not in ours and k in _OBSOLETE and theirs.get(k) == _OBSOLETE[k]:
      continue  # a removed field at its old default: nothing differed
    if k not in theirs and k in _RESOLVED_AT_START:
      continue  # recorded only since the field exists: nothing to compare
    b = theirs[k] if k in theirs else defaults.get(k)
    if _json_form(ours.get(k)) != _json_form(b):
      out.append((k, ours.get(k), theirs.get(k)))
  return out


def describe_differences(diff, where: str, limit: int = 3) -> str:
  """"config.x=1 here but 2 in <where>; ..." for the first `limit` fields."""
  parts = [f"config.{k}={a!r} here but {b!r} in {where}"
           for k, a, b in diff[:limit]]
  more = f" and {len(diff) - limit} more" if len(diff) > limit else ""
  return "; ".join(parts) + more


def validate(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks every field of `cfg` against the schema; returns a coerced copy.

  Raises:
    ConfigError: naming the first unknown field, wrong type or bad value.
  """
  defaults = _flatten(default_config())
  given = _flatten(cfg)
  for key in given:
    if key not in defaults and not _is_open(key):
      raise _unknown(key, defaults)
  out = default_config()
  for key, value in given.items():
    if key in defaults:
      value = _coerce(key, value, defaults[key])
    node = out
    *parents, leaf = key.split(".")
    for p in parents:
      if p not in node:  # a nested dict inside an open sub-config
        node[p] = ml_collections.ConfigDict()
      node = node[p]
    node[leaf] = value
  flat = _flatten(out)
  for key, choices in _CHOICES.items():
    values = flat[key] if isinstance(flat[key], tuple) else (flat[key],)
    for v in values:
      if v not in choices:
        raise ConfigError(f"config.{key}={v!r} is not one of {choices}")
  for key, value in flat.items():
    # NaN passes every `<`/`>` check below, and inf is never meant.
    for v in value if isinstance(value, tuple) else (value,):
      if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"config.{key} must be finite; got {value!r}")
  for key in ("data.train_examples", "data.eval_examples"):
    if flat[key] != -1 and flat[key] <= 0:
      raise ConfigError(f"config.{key} must be > 0 (or -1 for all); got "
                        f"{flat[key]!r}")
  for key in _POSITIVE:
    if flat[key] <= 0:
      raise ConfigError(f"config.{key} must be > 0; got {flat[key]!r}")
  for key in _NON_NEGATIVE:
    if flat[key] < 0:
      raise ConfigError(f"config.{key} must be >= 0; got {flat[key]!r}")
  if not out.loss.missing_policies or len(set(out.loss.missing_policies)) != len(
      out.loss.missing_policies):
    raise ConfigError("config.loss.missing_policies must be non-empty without "
                      f"duplicates; got {out.loss.missing_policies!r}")
  if not out.modes and not (out.partitions or out.grouping.groups):
    raise ConfigError("config.modes is empty: give at least one of ('mtl', "
                      "'stl'), or arms in config.partitions")
  if len(set(out.modes)) != len(out.modes):
    raise ConfigError(f"config.modes has duplicates: {out.modes!r}")
  lrs = out.optimizer.learning_rates
  if not lrs or any(lr <= 0 for lr in lrs):
    raise ConfigError(f"config.optimizer.learning_rates must be non-empty and "
                      f"> 0; got {lrs!r}")
  for f in out.data.label_fraction:
    if f != -1.0 and not 0.0 <= f <= 1.0:
      raise ConfigError(f"config.data.label_fraction values must be in [0, 1] "
                        f"(or -1 for all); got {f!r}")
  for b in out.data.label_budget:
    if b < -1:
      raise ConfigError(f"config.data.label_budget values must be >= 0 (or -1 "
                        f"for all); got {b!r}")
  if not 0.0 <= out.train.warn_skipped_share <= 1.0:
    raise ConfigError("config.train.warn_skipped_share must be in [0, 1]; got "
                      f"{out.train.warn_skipped_share!r}")
  if not 0.0 <= out.model.dropout < 1.0:
    raise ConfigError(f"config.model.dropout must be in [0, 1); got "
                      f"{out.model.dropout!r}")
  if len(set(out.train.selection_tasks)) != len(out.train.selection_tasks) or any(
      not isinstance(k, int) or isinstance(k, bool) or k < 0
      for k in out.train.selection_tasks):
    raise ConfigError("config.train.selection_tasks must hold distinct task "
                      f"indices (integers >= 0); got "
                      f"{out.train.selection_tasks!r}")
  if len(set(out.stl_tasks)) != len(out.stl_tasks) or any(
      not isinstance(k, int) or isinstance(k, bool) or k < 0
      for k in out.stl_tasks):
    raise ConfigError("config.stl_tasks must hold distinct task indices "
                      f"(integers >= 0); got {out.stl_tasks!r}")
  _check_partitions(out)
  _check_selection_metric(out)
  _check_method(out)
  _check_method_arms(out)
  _check_grouping(out)
  _check_tfds(out)
  for k in out.data.shuffle_tasks:
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
      raise ConfigError("config.data.shuffle_tasks must hold task indices "
                        f"(integers >= 0); got {out.data.shuffle_tasks!r}")
  if out.data.split_sizes and (len(out.data.split_sizes) != 3
                               or min(out.data.split_sizes) <= 0):
    raise ConfigError("config.data.split_sizes must be () or three positive "
                      f"sizes (train, validation, test); got "
                      f"{out.data.split_sizes!r}")
  # Components: the names must be registered, and their own settings must
  # fit their constructors (an import of the built-ins on first use).
  from mtljax import registry  # pylint: disable=g-import-not-at-top
  for key, reg in _REGISTRY_FIELDS.items():
    getattr(registry, reg).get(flat[key])
  for field, (reg, name_field, provided) in OPEN_FIELDS.items():
    getattr(registry, reg).check_kwargs(flat[name_field],
                                        open_kwargs(out, field), field,
                                        provided)
  if out.train.eval_every > out.train.steps:
    raise ConfigError(f"config.train.eval_every={out.train.eval_every} exceeds "
                      f"config.train.steps={out.train.steps}: no validation "
                      "would run, so no checkpoint could be selected")
  if out.train.batch_size % max(out.num_devices, 1):
    raise ConfigError(f"config.train.batch_size={out.train.batch_size} is not "
                      f"divisible by config.num_devices={out.num_devices}")
  return out


def to_dict(cfg: ml_collections.ConfigDict) -> dict:
  """JSON-friendly nested dict of a config."""
  def conv(v):
    if isinstance(v, ml_collections.ConfigDict):
      return {k: conv(x) for k, x in v.items()}
    if isinstance(v, tuple):
      return list(v)
    return v
  return conv(cfg)
