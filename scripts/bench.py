#!/usr/bin/env python
"""mtljax benchmarks: throughput, efficiency, runs per compile, ...

    python scripts/bench.py                        # everything (~25 min, 2 cores)
    python scripts/bench.py --smoke --out /tmp/b.json  # tiny sizes, for CI
    python scripts/bench.py --only b1,b2,b2b       # some sections
    python scripts/bench.py --reproduce-times      # + `python -m mtljax reproduce`

Sections (docs/PERFORMANCE.md describes them and records results; the code
is in scripts/benchlib/, this file is the command line):

  b1   step throughput of a reference MLP: mtljax vs PyTorch eager and
       torch.compile (whole step, optimizer included), same process.
  b2   hardware efficiency: b1's achieved FLOP/s over the best f32 matmul
       FLOP/s that any installed library reaches in the same run, and b1's
       step time against the sum of its own matmuls' times.
  b2b  bf16 compute (f32 params) vs PyTorch bf16 autocast.
  b3   runs per compile: R runs in one step ("vmap" and "unroll" run maps)
       vs R dispatches of a one-run step; a width sweep.
  b4   input pipeline: the grain TrainPipeline vs device-resident batches.
  b5   data-parallel (1 vs 2 devices) and bf16 agree; MFU on GPU only.
  b6   compile time of the quick experiment's steps (and the reproduction's
       wall time with --reproduce-times).
  b7   a small study end to end: mtljax in one process vs one PyTorch
       process per run, one after another (start-up included).
  b8   input pipeline memory: peak RSS of the train feed and evaluation
       splits on a celeb_a-sized mock (162,770 x 64x64x3), in a worker.
  opt  what the optimizations buy: each one switched off, side by side
       with it switched on (custom matmul and convolution backward passes,
       the fused first CNN stage).
  layers  the study CNN's run-step against the sum of its pieces (each
       convolution's forward and gradients, ReLU + pool), each jitted alone.
  methods  every MTL method's step (loss weightings, gradient aggregators
       on parameter and on representation gradients) against equal
       weighting's, interleaved, for the CNN and the MLP at T = 4 and 10
       (~15 min on 2 cores; `--only methods`).

Timing. Every number is a median over rounds, after warm-up. Variants that
are compared with each other are measured interleaved, round-robin, in one
process, so that load from other processes hits them alike; the load average
is recorded with the results. JAX steps are dispatched back to back (no host
sync inside a round) and waited for at the end of each round.

PyTorch (the `bench` extra) is optional: without it the PyTorch rows say
"torch not installed" and everything else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

# Run as `python scripts/bench.py`: scripts/ (benchlib) is on sys.path; the
# repository root (mtljax) may not be, when mtljax is not installed.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchlib.common import (
    environment, err_text, FULL, load_average, SECTIONS, SMOKE)
from benchlib.data import section_b8, worker_b8
from benchlib.layers import section_layers
from benchlib.mlp import section_b1, section_b2, section_b2b
from benchlib.methods import section_methods
from benchlib.runs import (
    section_b3, section_b4, section_b5, section_b6, worker_b5)
from benchlib.study import (
    section_b7, section_opt, worker_b7_jax, worker_b7_torch, worker_opt_malloc)
from benchlib.table import table
# pylint: enable=g-import-not-at-top,wrong-import-position


_SECTION_FNS = {"b1": section_b1, "b2": section_b2, "b2b": section_b2b,
                "b3": section_b3, "b4": section_b4, "b5": section_b5,
                "b6": section_b6, "b7": section_b7, "b8": section_b8,
                "opt": section_opt, "layers": section_layers,
                "methods": section_methods}


def _worker_main(args, cfg) -> None:
  a = args.worker_args
  if args.worker == "b5":
    out = worker_b5(cfg)
  elif args.worker == "b7-jax":
    out = worker_b7_jax(cfg, a[0])
  elif args.worker == "b7-torch":
    out = worker_b7_torch(cfg, a[0], int(a[1]), int(a[2]))
  elif args.worker == "b8":
    out = worker_b8(cfg)
  elif args.worker == "opt-malloc":
    out = worker_opt_malloc(cfg)
  else:
    raise SystemExit(f"unknown worker {args.worker!r}")
  print(json.dumps(out))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="bench_results.json",
                 help="where the JSON results go (default: %(default)s)")
  p.add_argument("--smoke", action="store_true",
                 help="tiny sizes and iterations: checks that it runs (CI)")
  p.add_argument("--only", default=",".join(SECTIONS),
                 help="comma-separated sections (default: all): "
                 + ",".join(SECTIONS))
  p.add_argument("--data-dir", default=None,
                 help="TFDS data dir for b4/b7 (default: a cache under "
                 "$TMPDIR, built on first use)")
  p.add_argument("--reproduce-times", action="store_true",
                 help="b6: also time `python -m mtljax reproduce` (long)")
  p.add_argument("--b7-all", action="store_true",
                 help="b7: time all PyTorch processes instead of those of "
                 "2 seeds, scaled up (~4 min more)")
  p.add_argument("--worker", help=argparse.SUPPRESS)
  p.add_argument("--worker-args", nargs="*", default=[], help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  cfg = SMOKE if args.smoke else FULL
  # As the `mtljax` command does, before JAX starts (MTLJAX_MALLOC_TUNING=0
  # turns it off; the opt section measures both).
  from mtljax import hostmem  # pylint: disable=g-import-not-at-top
  hostmem.tune_allocator()
  if args.worker:
    _worker_main(args, cfg)
    return 0
  only = [s.strip() for s in args.only.split(",") if s.strip()]
  bad = [s for s in only if s not in SECTIONS]
  if bad:
    p.error(f"unknown section(s) {bad}; choose from {SECTIONS}")

  res = {"schema_version": 1, "smoke": args.smoke,
         "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
         "load_average_start": load_average(), "env": environment(),
         "errors": {}}
  t_all = time.perf_counter()
  for name in SECTIONS:
    if name not in only:
      continue
    t0 = time.perf_counter()
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    try:
      fn = _SECTION_FNS[name]
      if name in ("b4", "b6", "b7"):
        fn(cfg, res, args)
      else:
        fn(cfg, res)
    except Exception as e:  # pylint: disable=broad-except
      # One failing section must not lose the others' results.
      traceback.print_exc()
      res["errors"][name] = err_text(e)
    if name in res:
      res[name]["section_s"] = time.perf_counter() - t0
  res["total_s"] = time.perf_counter() - t_all
  res["load_average_end"] = load_average()
  text = table(res)
  print(text)
  print(f"load average start {res['load_average_start']} end "
        f"{res['load_average_end']}; total {res['total_s']:.0f} s")
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1)
  return 1 if res["errors"] else 0


if __name__ == "__main__":
  sys.exit(main())
