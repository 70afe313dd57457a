"""Runs the points of a sweep one after another, resumably.

    run_sweep(base_config, points, workdir)

Point i trains in `workdir/<point_name>` with `train_and_evaluate`, so a sweep
killed half-way and started again skips finished points (their results.json
exists) and resumes the interrupted one from its last checkpoint. The same
points can instead be printed as independent `mtljax train` commands
(`mtljax sweep --print-commands`) for a cluster scheduler.
"""

from __future__ import annotations

import logging
import os

from mtljax import config as config_lib
from mtljax.run import preflight
from mtljax.run import train
from mtljax.run import workdir as workdir_lib

log = logging.getLogger("mtljax")


def check_overrides(points: list[dict], overrides: dict) -> None:
  """Refuses a command-line override of a field that the sweep sets.

  The point's value would win, so the override would be silently dropped.
  """
  swept = {k for p in points for k in p}
  clash = sorted(swept & set(overrides))
  if clash:
    values = [p[clash[0]] for p in points if clash[0] in p]
    raise config_lib.ConfigError(
        f"--config.{clash[0]} is set by points of this sweep (values "
        f"{', '.join(map(repr, values))}), so the override would be ignored; "
        "edit get_sweep, or run one point with `mtljax train`")


def prepare_sweep(base, points: list[dict], workdir: str,
                  extra: dict | None = None, *, overwrite: bool = False
                  ) -> list[tuple[dict, str, object]]:
  """Checks every point before any trains: (point, name, resolved config).

  Raises:
    ConfigError: as `run_sweep`.
  """
  check_overrides(points, extra or {})
  names = [config_lib.point_name(p) for p in points]
  if len(set(names)) != len(names):
    raise config_lib.ConfigError("sweep points must differ; duplicate point "
                                 f"names: {sorted(names)}")
  # Every point is checked before the first one trains, against the dataset
  # too: a bad point 7 must not surface after an hour of points 1-6. So is
  # every finished point's config: a rerun with other settings must not
  # report the old results as if they were the new ones.
  out = []
  for point, name in zip(points, names):
    try:
      cfg, _ = preflight.resolve(
          config_lib.validate(config_lib.apply_overrides(base, point)))
    except config_lib.ConfigError as e:
      raise config_lib.ConfigError(f"sweep point {name}: {e}") from None
    if not overwrite:
      workdir_lib.check_owner(
          os.path.join(workdir, name), cfg,
          hint="Use another --workdir, or --overwrite to move the old "
          "results of each such point aside and recompute it.")
    out.append((point, name, cfg))
  return out


def run_sweep(base, points: list[dict], workdir: str,
              extra: dict | None = None, *, overwrite: bool = False,
              prepared: list | None = None) -> list[str]:
  """Trains every point; returns the point workdirs.

  Args:
    base: the validated base config (command-line overrides applied).
    points: override dicts from the config's get_sweep.
    workdir: parent directory of the point workdirs.
    extra: command-line overrides, recorded in each point's condition.
    overwrite: recompute points whose workdir was made by another config,
      after moving their old contents to `<point>.old[.n]`.
    prepared: `prepare_sweep`'s output for these arguments, when the caller
      has checked the points already (`mtljax reproduce` checks every
      experiment's before the first trains).

  Raises:
    ConfigError: a bad point (named), a command-line override of a swept
      field, or a finished point made by another config (without overwrite).
  """
  if prepared is None:
    prepared = prepare_sweep(base, points, workdir, extra,
                             overwrite=overwrite)
  points = [p for p, _, _ in prepared]
  names = [n for _, n, _ in prepared]
  configs = [c for _, _, c in prepared]
  dirs = []
  for i, (point, cfg, name) in enumerate(zip(points, configs, names)):
    pdir = os.path.join(workdir, name)
    dirs.append(pdir)
    if os.path.exists(os.path.join(pdir, "results.json")):
      try:
        workdir_lib.check_owner(pdir, cfg)
        log.info("[%d/%d] %s: done, skipping", i + 1, len(points), name)
        continue
      except config_lib.ConfigError:
        pass  # only reached with overwrite: train_and_evaluate moves it
    log.info("[%d/%d] %s", i + 1, len(points), name)
    train.train_and_evaluate(cfg, pdir, condition={**(extra or {}), **point},
                             overwrite=overwrite)
  return dirs
