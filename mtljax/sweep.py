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
from mtljax import train

log = logging.getLogger("mtljax")


def run_sweep(base, points: list[dict], workdir: str,
              extra: dict | None = None) -> list[str]:
  """Trains every point; returns the point workdirs.

  Args:
    base: the validated base config (command-line overrides applied).
    points: override dicts from the config's get_sweep.
    workdir: parent directory of the point workdirs.
    extra: command-line overrides, recorded in each point's condition.
  """
  # Every point is validated before the first one trains: a typo in point 7
  # must not surface after an hour of points 1-6.
  configs = [config_lib.validate(config_lib.apply_overrides(base, p))
             for p in points]
  names = [config_lib.point_name(p) for p in points]
  if len(set(names)) != len(names):
    raise config_lib.ConfigError("sweep points must differ; duplicate point "
                                 f"names: {sorted(names)}")
  dirs = []
  for i, (point, cfg, name) in enumerate(zip(points, configs, names)):
    pdir = os.path.join(workdir, name)
    dirs.append(pdir)
    if os.path.exists(os.path.join(pdir, "results.json")):
      log.info("[%d/%d] %s: done, skipping", i + 1, len(points), name)
      continue
    log.info("[%d/%d] %s", i + 1, len(points), name)
    train.train_and_evaluate(cfg, pdir, condition={**(extra or {}), **point})
  return dirs
