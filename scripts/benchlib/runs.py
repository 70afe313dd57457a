"""B3-B6: runs per compile, input pipeline, parallel and bf16, compile time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchlib.common import (
    bench_data_dir, fake_batch, interleaved, JaxSetup, REPO, run_worker, SMOKE)


# --------------------------------------------------------------------------
# B3: runs per compile.


def _b3_model(cfg, model, width=None):
  if model == "cnn":
    return dict(encoder="cnn", width=width or cfg["cnn_width"],
                depth=cfg["cnn_depth"], image_shape=cfg["b3_image"])
  return dict(encoder="mlp", width=width or cfg["small_mlp_width"], depth=2,
              image_shape=cfg["b3_image"])


def _b3_point(cfg, model, r, width=None, maps=("vmap", "unroll", "scan")):
  """Seconds per step: R runs in one step per run map, and R 1-run steps."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  m = _b3_model(cfg, model, width)
  common = dict(tasks=cfg["tasks"], batch=cfg["b3_batch"], **m)
  fns, compile_s = {}, {}
  for run_map in maps:
    s = JaxSetup(seeds=tuple(range(r)), run_map=run_map, **common)
    compile_s[run_map] = s.compile_seconds()["compile_s"]
    fns[run_map] = s.runner()
  # The baseline: one compiled 1-run step, dispatched once per run (R states;
  # their values do not matter for timing, so they are copies).
  one = JaxSetup(seeds=(0,), run_map="unroll", **common)
  run_flops = one.compile_seconds()["xla_flops"]
  states = [jax.tree.map(jnp.copy, one.state) for _ in range(r)]

  def sequential(n):
    # R dispatches per step, no sync between them: what a loop over R runs,
    # each with its own compiled-once step, does.
    for _ in range(n):
      for i in range(r):
        states[i], _ = one.step(states[i], one.specs, one.batch)
    jax.block_until_ready(states)

  fns["sequential"] = sequential
  # The fixed cost of one dispatch: a step that does no work on the same
  # state (donated, like the real one).
  noop = jax.jit(lambda st, specs, batch: st.replace(step=st.step + 1),
                 donate_argnums=0)
  noop_states = [jax.tree.map(jnp.copy, one.state) for _ in range(r)]

  def dispatch_only(n):
    for _ in range(n):
      for i in range(r):
        noop_states[i] = noop(noop_states[i], one.specs, one.batch)
    jax.block_until_ready(noop_states)

  fns["dispatch"] = dispatch_only
  timed = interleaved(fns, rounds=cfg["b3_rounds"], target_s=cfg["b3_target_s"])
  seq = timed["sequential"]["median_s"]
  disp = timed["dispatch"]["median_s"]
  out = {"sequential_ms": seq * 1e3, "run_gflop": run_flops / 1e9,
         # Host cost of one dispatch, as a share of a one-run step: the part
         # of a step that batching R runs into one dispatch removes outright.
         "dispatch_ms": disp * 1e3 / r,
         "dispatch_share": disp / seq,
         # What one run alone achieves: how much of the machine is left idle
         # for other runs to use.
         "run_gflops_per_s": run_flops * r / seq / 1e9}
  for run_map in maps:
    t = timed[run_map]["median_s"]
    out[run_map] = {"ms": t * 1e3, "speedup": seq / t,
                    "compile_s": compile_s[run_map]}
  return out


def section_b3(cfg, res):
  from mtljax import models  # pylint: disable=g-import-not-at-top
  from mtljax.core.run_map import default_run_map  # pylint: disable=g-import-not-at-top
  out = {"models": {}, "width_sweep": {}}
  for model in ("mlp", "cnn"):
    m = _b3_model(cfg, model)
    pts = {}
    for r in cfg["b3_rs"]:
      pts[str(r)] = _b3_point(cfg, model, r)
      best = max(pts[str(r)][k]["speedup"] for k in ("vmap", "unroll", "scan"))
      pts[str(r)]["best_speedup_over_R"] = best / r
    out["models"][model] = {"width": m["width"], "depth": m["depth"],
                            "image_shape": list(m["image_shape"]),
                            "batch": cfg["b3_batch"], "by_R": pts}
  r = cfg["b3_r_sweep"]
  for model in ("mlp", "cnn"):
    sweep = {}
    run_map = default_run_map(models.is_convolutional(model))
    for width in cfg["b3_widths"][model]:
      m = out["models"][model]
      if width == m["width"] and str(r) in m["by_R"]:
        p = m["by_R"][str(r)]  # measured above already
      else:
        p = _b3_point(cfg, model, r, width, maps=(run_map,))
      sweep[str(width)] = {"R": r, "map": run_map,
                           "dispatch_share": p["dispatch_share"],
                           "speedup": p[run_map]["speedup"],
                           "step_ms": p[run_map]["ms"],
                           "sequential_ms": p["sequential_ms"],
                           "run_gflop": p["run_gflop"],
                           "run_gflops_per_s": p["run_gflops_per_s"]}
    # Compute-bound from the knee of one run's throughput: the first width at
    # which a run alone reaches half the best rate of the sweep (below it,
    # fixed per-step costs dominate and there is idle machine to share).
    best = max(v["run_gflops_per_s"] for v in sweep.values())
    bound = [int(w) for w, v in sweep.items()
             if v["run_gflops_per_s"] >= 0.5 * best]
    out["width_sweep"][model] = {"by_width": sweep,
                                 "compute_bound_width": min(bound) if bound
                                 else None}
  out["goal"] = "speed-up >= 0.8 R at small widths"
  res["b3"] = out


# --------------------------------------------------------------------------
# B4: input pipeline.


def section_b4(cfg, res, args):
  import jax  # pylint: disable=g-import-not-at-top
  from mtljax import data as data_lib  # pylint: disable=g-import-not-at-top
  from mtljax.core import parallel  # pylint: disable=g-import-not-at-top
  from mtljax import models  # pylint: disable=g-import-not-at-top
  from mtljax.core.run_map import default_run_map  # pylint: disable=g-import-not-at-top
  data_dir = bench_data_dir(args)
  t0 = time.perf_counter()
  data_lib.build("mtl_scenes", data_dir=data_dir, split_sizes=cfg["b4_split"],
                 log=None)
  build_s = time.perf_counter() - t0
  seeds = tuple(range(cfg["b4_seeds"]))
  t0 = time.perf_counter()
  pipe = data_lib.TrainPipeline(
      "mtl_scenes", seeds=seeds, global_batch_size=cfg["b4_batch"],
      data_dir=data_dir, split_sizes=cfg["b4_split"], log=None)
  load_s = time.perf_counter() - t0
  run_map = default_run_map(models.is_convolutional("cnn"))
  s = JaxSetup(encoder="cnn", width=cfg["cnn_width"], depth=cfg["cnn_depth"],
               image_shape=pipe.image_shape, tasks=pipe.num_tasks,
               batch=cfg["b4_batch"], seeds=seeds, modes=("mtl", "stl"),
               run_map=run_map)
  resident = [parallel.global_batch(pipe.batch(i), s.mesh) for i in range(8)]
  it = pipe.batches(0)

  def with_pipeline(n):
    state = s.state
    for _ in range(n):
      batch = parallel.global_batch(next(it), s.mesh)
      state, _ = s.step(state, s.specs, batch)
    jax.block_until_ready(state)
    s.state = state

  def device_resident(n):
    state = s.state
    for i in range(n):
      state, _ = s.step(state, s.specs, resident[i % len(resident)])
    jax.block_until_ready(state)
    s.state = state

  fns = {"grain TrainPipeline": with_pipeline,
         "device-resident batches": device_resident}
  # target_s: long enough rounds that prefetching reaches a steady state.
  timed = interleaved(fns, rounds=cfg["b4_rounds"],
                      target_s=cfg["target_s"] * 4)
  rows = {name: {"step_ms": tm["median_s"] * 1e3,
                 "steps_per_s": 1.0 / tm["median_s"]}
          for name, tm in timed.items()}
  t_pipe = timed["grain TrainPipeline"]["median_s"]
  t_res = timed["device-resident batches"]["median_s"]
  # Host time to produce one batch, on its own (what prefetching must hide).
  t0 = time.perf_counter()
  for i in range(20):
    parallel.global_batch(pipe.batch(100 + i), s.mesh)
  host_ms = (time.perf_counter() - t0) / 20 * 1e3
  res["b4"] = {
      "program": f"CNN width {cfg['cnn_width']}, {len(seeds)} seeds x (MTL + "
                 f"{pipe.num_tasks} STL) = {s.num_runs} runs, batch "
                 f"{cfg['b4_batch']}, run_map {run_map}",
      "rows": rows, "overhead": t_pipe / t_res - 1.0,
      "host_batch_ms": host_ms, "dataset_build_s": build_s,
      "pipeline_load_s": load_s, "goal": "<= 0.05"}


# --------------------------------------------------------------------------
# B5: data-parallel and bf16 modes.


def worker_b5(cfg) -> dict:
  """Runs in a subprocess with 2 forced host devices."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtljax.core import parallel  # pylint: disable=g-import-not-at-top
  out = {"devices": jax.device_count(), "backend": jax.default_backend()}
  common = dict(encoder="mlp", width=32, depth=2, image_shape=(8, 8, 3),
                tasks=4, batch=32, seeds=(0, 1), modes=("mtl", "stl"),
                donate=False)
  batches = [fake_batch(i, 2, 32, (8, 8, 3), 4) for i in range(cfg["b5_steps"])]

  def train(setup):
    state, loss = setup.state, None
    for b in batches:
      state, m = setup.step(state, setup.specs,
                            parallel.global_batch(b, setup.mesh))
      loss = m["loss"]
    return state, np.asarray(loss)

  one = JaxSetup(num_devices=1, **common)
  two = JaxSetup(num_devices=min(2, jax.device_count()), **common)
  s1, l1 = train(one)
  s2, l2 = train(two)
  diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(jax.tree.leaves(s1.params),
                             jax.tree.leaves(s2.params)))
  out["data_parallel"] = {
      "devices": [1, two.mesh.devices.size], "steps": len(batches),
      "max_abs_param_diff": diff, "max_abs_loss_diff": float(np.max(np.abs(l1 - l2))),
      "tolerance": 1e-5, "agree": diff < 1e-5}
  bf = JaxSetup(num_devices=1, dtype="bfloat16", **common)
  _, lb = train(bf)
  rel = float(np.max(np.abs(lb - l1) / np.maximum(np.abs(l1), 1e-6)))
  out["bf16"] = {"max_rel_loss_diff_vs_f32": rel, "tolerance": 0.05,
                 "agree": rel < 0.05, "finite": bool(np.all(np.isfinite(lb)))}
  return out


# Peak dense bf16 FLOP/s of accelerators we may meet, for MFU (GPU only).
_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


def section_b5(cfg, res):
  import jax  # pylint: disable=g-import-not-at-top
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      " --xla_force_host_platform_device_count=2").strip()
  t0 = time.perf_counter()
  out = run_worker("b5", cfg, env=env)
  out["wall_s"] = time.perf_counter() - t0
  mfu = None
  if jax.default_backend() == "gpu" and "b1" in res:
    kind = jax.devices()[0].device_kind
    peak = next((v for k, v in _PEAK_BF16.items() if k in kind), None)
    if peak:
      mfu = res["b1"]["rows"]["mtljax"]["gflops_per_s"] * 1e9 / peak
  out["mfu"] = mfu
  out["mfu_note"] = ("MFU is reported on GPU only" if mfu is None else
                     "b1 mtljax FLOP/s / peak dense bf16 FLOP/s")
  res["b5"] = out


# --------------------------------------------------------------------------
# B6: compile time.


def section_b6(cfg, res, args):
  from mtljax import config as config_lib  # pylint: disable=g-import-not-at-top
  from mtljax.core import runs  # pylint: disable=g-import-not-at-top
  from mtljax import models  # pylint: disable=g-import-not-at-top
  from mtljax.core.run_map import default_run_map  # pylint: disable=g-import-not-at-top
  spec = os.path.join(REPO, "experiments", "e1_mtl_vs_stl.py") + (
      ":smoke" if cfg is SMOKE else ":quick")
  c = config_lib.load_config(spec)
  shape = (32, 32, 3)
  progs = runs.build_programs(c, shape, 4)
  seeds = tuple(range(c.num_seeds))
  rows = {}
  for prog in progs:
    auto = default_run_map(models.is_convolutional(prog.model_cfg))
    # Smoke (CI): no "unroll", whose R-copy compile only costs CI time; the
    # code path is the same as the other run maps'.
    maps = {auto, "vmap"} | (set() if cfg is SMOKE else {"unroll"})
    for run_map in sorted(maps):
      s = JaxSetup(encoder=prog.model_cfg.encoder, width=prog.model_cfg.width,
                   depth=prog.model_cfg.depth, image_shape=shape, tasks=4,
                   batch=c.train.batch_size, seeds=seeds,
                   modes=c.modes if prog is progs[0] else ("stl",),
                   lrs=c.optimizer.learning_rates, run_map=run_map)
      info = s.compile_seconds()
      rows[f"{prog.name} ({s.num_runs} runs, {run_map})"] = {
          "lower_s": info["lower_s"], "compile_s": info["compile_s"]}
  out = {"config": spec.split(REPO + os.sep)[-1], "rows": rows}
  if args.reproduce_times:
    work = tempfile.mkdtemp(prefix="mtljax_bench_reproduce_")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mtljax", "reproduce",
                           "--workdir", work], cwd=REPO, capture_output=True,
                          text=True)
    out["reproduce"] = {"wall_s": time.perf_counter() - t0,
                        "returncode": proc.returncode,
                        "command": "python -m mtljax reproduce"}
    shutil.rmtree(work, ignore_errors=True)
  res["b6"] = out
