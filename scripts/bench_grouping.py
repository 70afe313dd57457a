#!/usr/bin/env python
"""The grouping search's costs: one program against separate trainings, and
TAG's measurement overhead (docs/PERFORMANCE.md, "Grouping").

    python scripts/bench_grouping.py --out docs/bench/bench_cpu_grouping.json
    python scripts/bench_grouping.py --smoke --out /tmp/g.json   # tiny

1. End to end: the 15 task groups of mtl_scenes' 4 tasks × 5 seeds (75 runs,
   E8's CNN, batch 32) trained as ONE `mtljax train` (config.grouping.groups
   = "all"), against 15 `mtljax train` commands of one group each (the same
   runs, as a user without a runs axis would train them), one after another.
   Each is a fresh process with the compilation cache off, timed from start
   to results.json; the two arms alternate, so load hits them alike.
2. TAG's overhead: the MTL program's step (5 seeds) and its affinity
   measurement, timed interleaved in one process (medians over rounds after
   warm-up). The overhead with a measurement every k steps is t_aff / (k ·
   t_step); the issue's goal is at most 2x the step time at k = 10.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

from benchlib.common import _cpu_model, cpu_features, load_average  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

E8 = os.path.join(_REPO, "experiments", "e8_grouping.py")


def _train(args, workdir, overrides, data_dir) -> float:
  cmd = [sys.executable, "-m", "mtljax", "train", "--config",
         f"{E8}:quick,mtl_scenes", "--workdir", workdir,
         "--config.train.progress='none'",
         f"--config.train.steps={args.steps}",
         f"--config.train.eval_every={args.steps // 2}",
         f"--config.train.checkpoint_every={args.steps}",
         "--config.grouping.affinity_every=0", *overrides]
  env = dict(os.environ, MTLJAX_COMPILATION_CACHE="", TFDS_DATA_DIR=data_dir)
  t = time.perf_counter()
  subprocess.run(cmd, check=True, env=env, cwd=_REPO,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return time.perf_counter() - t


def end_to_end(args, data_dir) -> dict:
  from mtljax.core import runs  # pylint: disable=g-import-not-at-top
  groups = runs.grouping_groups("all", 4)
  one, separate = [], []
  with tempfile.TemporaryDirectory() as tmp:
    # Build the data once, outside the timings.
    _train(args, os.path.join(tmp, "warm"), ["--config.modes=('stl',)",
                                             "--config.stl_tasks=(0,)",
                                             "--config.grouping.groups=''"],
           data_dir)
    for r in range(args.rounds):
      one.append(_train(args, os.path.join(tmp, f"one{r}"),
                        ["--config.grouping.groups='all'"], data_dir))
      total = 0.0
      for g in groups:
        part = "((" + ",".join(map(str, g)) + ",),)"
        total += _train(args, os.path.join(tmp, f"sep{r}_{'_'.join(map(str, g))}"),
                        ["--config.modes=()", "--config.grouping.groups=''",
                         f"--config.partitions=(('g',{part}),)"], data_dir)
      separate.append(total)
  return {"groups": len(groups), "seeds": 5, "runs": 5 * len(groups),
          "steps": args.steps, "rounds": args.rounds,
          "one_program_s": one, "separate_s": separate,
          "one_program_median_s": statistics.median(one),
          "separate_median_s": statistics.median(separate),
          "speedup": statistics.median(s / o for s, o in zip(separate, one))}


def tag_overhead(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtljax import config as config_lib  # pylint: disable=g-import-not-at-top
  from mtljax.core import affinity, parallel, runs  # pylint: disable=g-import-not-at-top
  from mtljax.core import state as state_lib, step as step_lib  # pylint: disable=g-import-not-at-top
  from mtljax.core import run_map as run_map_lib  # pylint: disable=g-import-not-at-top
  # MTL alone: the TAG measurement's own program, without the search's runs.
  cfg = config_lib.load_config(f"{E8}:quick,mtl_scenes",
                               ["modes=('mtl',)", "grouping.groups=''"])
  shape, t = (32, 32, 3), 4
  prog = runs.build_programs(cfg, shape, t)[0]
  seeds = list(range(cfg.num_seeds))
  tx = step_lib.make_optimizer(cfg.optimizer, cfg.train.steps)
  gd, params, ms = state_lib.init_params(prog.model_cfg, shape, t, seeds,
                                         prog.num_groups)
  mesh = parallel.make_mesh(1)
  run_map = run_map_lib.default_run_map(True)
  step = step_lib.make_train_step(gd, tx, normalize=cfg.loss.normalize,
                                  mesh=mesh, run_map=run_map, donate=True)
  meas = affinity.make_affinity_fn(gd, mesh=mesh, groups=[0],
                                   run_map=run_map)
  state = state_lib.init_state(params, ms, tx, None, t)
  specs = prog.specs(seeds)
  rng = np.random.default_rng(0)
  b = cfg.train.batch_size
  batch = parallel.global_batch({
      "image": rng.normal(size=(len(seeds), b) + shape).astype(np.float32),
      "labels": rng.integers(0, 2, (len(seeds), b, t)).astype(np.float32),
      "mask": np.ones((len(seeds), b, t), bool)}, mesh)
  acc = affinity.init_acc(len(seeds), 1, t)
  for _ in range(3):  # warm-up (compiles)
    state, _ = step(state, specs, batch)
    acc = meas(acc, state, specs, batch)
  jax.block_until_ready((state, acc))
  t_step, t_aff = [], []
  for _ in range(args.tag_rounds):
    t0 = time.perf_counter()
    for _ in range(10):
      state, _ = step(state, specs, batch)
    jax.block_until_ready(state)
    t1 = time.perf_counter()
    acc = meas(acc, state, specs, batch)
    jax.block_until_ready(acc)
    t2 = time.perf_counter()
    t_step.append((t1 - t0) / 10)
    t_aff.append(t2 - t1)
  ratios = [a / s for a, s in zip(t_aff, t_step)]
  ratio = statistics.median(ratios)
  return {"program": f"MTL, {len(seeds)} seeds, CNN width "
                     f"{cfg.model.width}, batch {b} of 32x32x3, T={t}, "
                     f"run_map {run_map}",
          "rounds": args.tag_rounds,
          "step_ms": 1e3 * statistics.median(t_step),
          "measurement_ms": 1e3 * statistics.median(t_aff),
          "measurement_over_step": ratio,
          "overhead_every_10": ratio / 10,
          "slowdown_every_10": 1 + ratio / 10,
          "goal": "slowdown <= 2x at k = 10",
          "met": 1 + ratio / 10 <= 2.0}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("--smoke", action="store_true")
  ap.add_argument("--data-dir", default=None)
  ap.add_argument("--only", choices=("tag", "end_to_end"), default=None,
                  help="one part, merged into an existing --out file")
  args = ap.parse_args()
  args.steps = 6 if args.smoke else 100
  args.rounds = 1 if args.smoke else 2
  args.tag_rounds = 3 if args.smoke else 15
  res = {}
  if args.only and os.path.exists(args.out):
    with open(args.out) as f:
      res = json.load(f)
  res.update({"machine": {"cpu": _cpu_model(), "cpu_features": cpu_features(),
                          "platform": platform.platform(),
                          "cores": os.cpu_count()}})
  res[f"load_average_before_{args.only or 'all'}"] = load_average()
  if args.only in (None, "tag"):
    res["tag"] = tag_overhead(args)
  if args.only in (None, "end_to_end"):
    with tempfile.TemporaryDirectory() as d:
      res["end_to_end"] = end_to_end(args, args.data_dir or d)
  res[f"load_average_after_{args.only or 'all'}"] = load_average()
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1)
    f.write("\n")
  e, g = res["end_to_end"], res["tag"]
  print(f"one program {e['one_program_median_s']:.1f} s vs 15 separate "
        f"{e['separate_median_s']:.1f} s: {e['speedup']:.2f}x; TAG: step "
        f"{g['step_ms']:.1f} ms, measurement {g['measurement_ms']:.1f} ms "
        f"({g['measurement_over_step']:.1f} steps): x{g['slowdown_every_10']:.2f}"
        " at every 10 steps")


if __name__ == "__main__":
  main()
