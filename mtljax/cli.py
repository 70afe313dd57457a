"""The `mtljax` command line (also `python -m mtljax`).

    mtljax train  --config experiments/e1_mtl_vs_stl.py:quick --workdir /tmp/e1
    mtljax train  --config experiments/e1_mtl_vs_stl.py --workdir w --config.model.width=32
    mtljax sweep  --config experiments/e2_width_sweep.py:quick --workdir /tmp/e2
    mtljax sweep  --config experiments/e2_width_sweep.py --workdir w --print-commands
    mtljax report /tmp/e2 [--out DIR] [--metric auc]
    mtljax data build mtl_scenes | mtljax data list
    mtljax reproduce [--full] [--workdir DIR]

Kept thin on purpose (the Flax-examples skeleton): each command parses its
arguments and calls a library function. User errors (bad config, data,
workdir or checkpoint) print one `error: ...` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

EXIT_USER_ERROR = 2
EXIT_NONFINITE = 3
EXIT_DISK_FULL = 4
EXIT_PREEMPTED = 143  # the conventional 128 + SIGTERM

_EPILOG = """\
config overrides:  any --config.FIELD=VALUE after the command, e.g.
  --config.model.width=64 --config.optimizer.learning_rates=(1e-3,3e-3)
  --config.data.label_budget=(300,3000,3000,3000)
Run `mtljax COMMAND --help` for a command's options."""


def _setup_logging(verbose: bool = False) -> None:
  logging.basicConfig(
      level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
      datefmt="%H:%M:%S", stream=sys.stderr)
  # Libraries log a lot at INFO (orbax every save, absl); keep ours readable.
  for name in ("absl", "orbax", "jax", "tensorflow_datasets", "grain"):
    logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
  try:
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.set_verbosity(absl_logging.INFO if verbose
                               else absl_logging.WARNING)
  except ImportError:
    pass


def _enable_compilation_cache() -> None:
  """Persists compiled programs across processes (see run/session.py)."""
  # Shared with the Python API, which sets up a notebook the same way.
  from mtljax.run import session  # pylint: disable=g-import-not-at-top
  session.enable_compilation_cache()


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """Separates `--config.x=y` overrides from the other arguments."""
  rest, overrides = [], []
  it = iter(argv)
  for a in it:
    if a.startswith("--config."):
      if "=" not in a:  # `--config.x y` form
        try:
          a = f"{a}={next(it)}"
        except StopIteration:
          rest.append(a)
          continue
      overrides.append(a[len("--"):])
    else:
      rest.append(a)
  return rest, overrides


def _overrides_dict(overrides: list[str]) -> dict:
  from mtljax import config as config_lib  # pylint: disable=g-import-not-at-top
  out = {}
  for o in overrides:
    k, v = o.split("=", 1)
    k = k.removeprefix("config.")
    # A display or bookkeeping setting (progress, data dir) does not define
    # a condition of the experiment: the report would otherwise split runs
    # that computed the same thing into "progress=log" and the rest.
    if k not in config_lib.COSMETIC_FIELDS:
      out[k] = config_lib.parse_value(v)
  return out


def _counts(items) -> list[tuple[str, int]]:
  """[(item, count)] in first-seen order."""
  out: dict = {}
  for x in items:
    out[x] = out.get(x, 0) + 1
  return list(out.items())


def _report_metrics() -> tuple[str, ...]:
  """Every metric of a registered task type, and "primary"."""
  from mtljax import registry  # pylint: disable=g-import-not-at-top
  names = registry.TASK_TYPES.names()  # Imports the built-in types (light).
  return tuple(dict.fromkeys(
      m for n in names for m in registry.TASK_TYPES.get(n).metrics)) + (
          "primary",)


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="mtljax", epilog=_EPILOG,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      description="Multi-task vs single-task learning studies in JAX.")
  p.add_argument("-v", "--verbose", action="store_true",
                 help="also show library logs")
  sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

  t = sub.add_parser("train", help="train one config (all its seeds, arms and "
                     "learning rates) and write results.json",
                     epilog=_EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
  t.add_argument("--config", required=True, metavar="PATH[:ARG]",
                 help="experiment file and optional variant, e.g. "
                 "experiments/e1_mtl_vs_stl.py:quick")
  t.add_argument("--workdir", required=True,
                 help="output directory; an unfinished run there is resumed")
  t.add_argument("--overwrite", action="store_true",
                 help="if the workdir was made by another config, move its "
                 "contents to WORKDIR.old[.n] and recompute (default: refuse)")

  s = sub.add_parser("sweep", help="run every point of the sweep written next "
                     "to a config", epilog=_EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
  s.add_argument("--config", required=True, metavar="PATH[:ARG]")
  s.add_argument("--workdir", required=True,
                 help="one subdirectory per sweep point is created here")
  s.add_argument("--print-commands", action="store_true",
                 help="print one `mtljax train` command per point (for a "
                 "cluster scheduler) instead of running them")
  s.add_argument("--overwrite", action="store_true",
                 help="recompute points whose workdir was made by another "
                 "config, after moving it to POINT.old[.n] (default: refuse)")
  s.add_argument("--no-report", action="store_true",
                 help="do not write the sweep report at the end")

  r = sub.add_parser("report", help="aggregate workdirs or sweeps into "
                     "report.md, report.json and PNG plots")
  r.add_argument("dirs", nargs="+", help="workdirs or sweep directories")
  r.add_argument("--out", default=None,
                 help="output directory (default: the first DIR)")
  r.add_argument("--metric", default=None, choices=_report_metrics(),
                 help="default: the runs' selection metric, or each task's "
                 "primary metric (AUC, accuracy, R²) for mixed task types")
  # None, not "stl": an arm named explicitly must exist, while the default
  # may simply not apply (then the report only notes it).
  r.add_argument("--baseline", default=None,
                 help="arm that the others are compared with (default stl); "
                 "an arm given here must be present in the runs")

  d = sub.add_parser("data", help="build or list datasets")
  dsub = d.add_subparsers(dest="data_command", required=True, metavar="ACTION")
  b = dsub.add_parser("build", help="build a dataset into the TFDS data dir")
  b.add_argument("name", help="dataset name, see `mtljax data list`")
  b.add_argument("--data-dir", default=None,
                 help="TFDS data dir (default: $TFDS_DATA_DIR or TFDS's own)")
  b.add_argument("--split-sizes", default=None, metavar="TRAIN,VAL,TEST",
                 help="build these split sizes instead of the defaults")
  dsub.add_parser("list", help="list the datasets")

  rp = sub.add_parser("reproduce", help="run the study of the lecture's claims "
                      "(quick by default) and print the verdict table")
  rp.add_argument("--full", action="store_true",
                  help="the full study (more seeds, data and steps)")
  rp.add_argument("--profile", choices=("cpu", "gpu"), default="cpu",
                  help="with --full: 'gpu' sizes the study for one "
                  "accelerator (10 seeds, widths to 128, a 4-point grid)")
  rp.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
  rp.add_argument("--workdir", default=None,
                  help="default: workdirs/reproduce_quick or _full")
  rp.add_argument("--experiments", default=None, metavar="DIR",
                  help="the experiment files (default: $MTLJAX_EXPERIMENTS, "
                  "./experiments, or the source checkout's)")
  rp.add_argument("--only", default=None,
                  help="comma-separated experiment names (e.g. e1,e2)")
  return p


def _cmd_train(args, overrides) -> None:
  from mtljax import config as config_lib  # pylint: disable=g-import-not-at-top
  from mtljax.run import train  # pylint: disable=g-import-not-at-top
  cfg = config_lib.load_config(args.config, overrides)
  results = train.train_and_evaluate(cfg, args.workdir,
                                     condition=_overrides_dict(overrides),
                                     overwrite=args.overwrite)
  _print_summary(results)


def _print_summary(results: dict) -> None:
  metric = results.get("selection_metric") or "auc"
  rows = {}
  for r in results["runs"]:
    key = (r["arm"], r["learning_rate"])
    rows.setdefault(key, []).append(r["test"]["mean"].get(metric))
  title = f"test {metric} (mean over seeds)"
  print(f"{'arm':<16}{'lr':>10}{title:>30}")
  for (arm, lr), vals in rows.items():
    vals = [v for v in vals if v is not None]
    mean = sum(vals) / len(vals) if vals else float("nan")
    print(f"{arm:<16}{lr:>10.2g}{mean:>30.4f}")


def _cmd_sweep(args, overrides) -> None:
  from mtljax import config as config_lib  # pylint: disable=g-import-not-at-top
  points = config_lib.load_sweep(args.config)
  extra = _overrides_dict(overrides)
  base = config_lib.load_config(args.config, overrides)
  from mtljax.run import sweep  # pylint: disable=g-import-not-at-top
  sweep.check_overrides(points, extra)
  if args.print_commands:
    for point in points:
      pdir = os.path.join(args.workdir, config_lib.point_name(point))
      cmd = ["mtljax", "train", "--config", args.config, "--workdir", pdir]
      cmd += [f"--config.{k}={_fmt(v)}" for k, v in {**extra, **point}.items()]
      print(shlex.join(cmd))
    return
  sweep.run_sweep(base, points, args.workdir, extra=extra,
                  overwrite=args.overwrite)
  if not args.no_report:
    from mtljax import errors  # pylint: disable=g-import-not-at-top
    from mtljax.analysis import report  # pylint: disable=g-import-not-at-top
    try:
      report.write_report(report.load_results([args.workdir]), args.workdir)
    except report.ReportError as e:
      raise errors.UsageError(str(e)) from None
    print(f"report: {os.path.join(args.workdir, 'report.md')}")


def _fmt(v) -> str:
  if isinstance(v, (tuple, list)):
    return "(" + ",".join(_fmt(x) for x in v) + ("," if len(v) == 1 else "") + ")"
  if isinstance(v, str):
    return repr(v)
  return str(v)


def _cmd_report(args) -> None:
  from mtljax import errors  # pylint: disable=g-import-not-at-top
  from mtljax.analysis import report  # pylint: disable=g-import-not-at-top
  out = args.out or args.dirs[0]
  if not args.out and os.path.isfile(out):  # `report DIR/results.json`
    out = os.path.dirname(out) or "."
  # Everything is read and checked before anything is created: a mistyped
  # directory or --baseline must not leave an output directory behind.
  # Only ReportError becomes a user error, so a genuine bug keeps its
  # traceback.
  try:
    results = report.load_results(args.dirs)
    if args.baseline is not None:
      report.check_baseline(results, args.baseline)
    report.write_report(results, out, metric=args.metric,
                        baseline=args.baseline or "stl")
  except report.ReportError as e:
    raise errors.UsageError(str(e)) from None
  print(f"report: {os.path.join(out, 'report.md')}")


def _cmd_data(args) -> None:
  from mtljax import data  # pylint: disable=g-import-not-at-top
  if args.data_command == "list":
    for name in data.dataset_names():
      spec = data.dataset_spec(name)
      types = ", ".join(f"{n} {k}" for k, n in _counts(spec.task_types))
      print(f"{name:<24} tasks={len(spec.task_names)} ({types}) "
            f"image={'x'.join(map(str, spec.image_shape))} "
            f"splits={spec.split_sizes}")
    return
  sizes = None
  if args.split_sizes:
    try:
      sizes = tuple(int(x) for x in args.split_sizes.split(","))
    except ValueError:
      sizes = ()
    if len(sizes) != 3 or min(sizes) <= 0:
      raise data.DataError(f"--split-sizes must be three positive integers "
                           f"TRAIN,VAL,TEST; got {args.split_sizes!r}")
  data.build(args.name, data_dir=args.data_dir, split_sizes=sizes)
  print(f"built {args.name} in {data.resolve_data_dir(args.data_dir)}")


def _cmd_reproduce(args) -> None:
  from mtljax import config as config_lib  # pylint: disable=g-import-not-at-top
  from mtljax.study import reproduce  # pylint: disable=g-import-not-at-top
  mode = "full" if args.full else ("smoke" if args.smoke else "quick")
  if args.profile == "gpu":
    if mode != "full":
      raise config_lib.ConfigError("--profile gpu needs --full")
    mode = "gpu"
  workdir = args.workdir or os.path.join("workdirs", f"reproduce_{mode}")
  only = args.only.split(",") if args.only else None
  reproduce.reproduce(mode, workdir, only=only, experiments=args.experiments)


def main(argv: list[str] | None = None) -> int:
  """Entry point; returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  rest, overrides = _split_overrides(argv)
  args = _parser().parse_args(rest)
  if overrides and args.command not in ("train", "sweep"):
    _parser().error(f"--config.* overrides only apply to train and sweep; got "
                    f"{overrides[0]!r}")
  _setup_logging(args.verbose)
  if args.command in ("train", "sweep", "reproduce"):
    # Before JAX starts its threads (see mtljax/hostmem.py).
    from mtljax import hostmem  # pylint: disable=g-import-not-at-top
    hostmem.tune_allocator()
    _enable_compilation_cache()
  # Imported here so that `--help` and argument errors stay instant.
  from mtljax import errors  # pylint: disable=g-import-not-at-top
  try:
    if args.command == "train":
      _cmd_train(args, overrides)
    elif args.command == "sweep":
      _cmd_sweep(args, overrides)
    elif args.command == "report":
      _cmd_report(args)
    elif args.command == "data":
      _cmd_data(args)
    elif args.command == "reproduce":
      _cmd_reproduce(args)
  except errors.USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_USER_ERROR
  except errors.NON_FINITE as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_NONFINITE
  except errors.DISK_FULL as e:
    print(f"error: {e.strerror or e}", file=sys.stderr)
    return EXIT_DISK_FULL
  except errors.PREEMPTED as e:
    print(f"stopped: {e}", file=sys.stderr)
    return EXIT_PREEMPTED
  except OSError as e:
    from mtljax.run import workdir  # pylint: disable=g-import-not-at-top
    if not workdir.is_disk_full(e):
      raise
    # Outside a training run (a dataset build, a report): no checkpoint to
    # speak of, but the same one line and exit status.
    print(f"error: no space left on device: {e.filename or e}",
          file=sys.stderr)
    return EXIT_DISK_FULL
  except KeyboardInterrupt:
    print("interrupted: run the same command again to resume from the last "
          "checkpoint, if one was saved", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
