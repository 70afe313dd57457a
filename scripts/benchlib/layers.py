"""Section "layers": the study CNN's run-step, piece by piece.

Where study throughput stands against its goal (issue #17: 2x the run-steps
per second), and why: one run's step of the study's CNN (width 8, depth 3,
batch 32 of 32x32x3) against the sum of its pieces, each jitted alone at
XLA:CPU's own rates: every convolution's forward pass, its weight gradient
and its input gradient (encoders._conv's backward pass, as the step runs
them), and each stage's ReLU + 2x2 max pool with its backward pass. The
first layer also runs as the fused step computes it: one convolution for
the G runs of a seed (core/stem.py), per run.
"""

from __future__ import annotations

import time

from benchlib.common import JaxSetup, interleaved, median_of


def _time(fn, *args, rounds: int) -> float:
  """Median seconds of jitted fn(*args), after warm-up."""
  import jax  # pylint: disable=g-import-not-at-top
  f = jax.jit(fn)
  jax.block_until_ready(f(*args))
  jax.block_until_ready(f(*args))
  ts = []
  for _ in range(rounds):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    ts.append(time.perf_counter() - t0)
  return median_of(ts)


def section_layers(cfg, res):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtljax.models import encoders  # pylint: disable=g-import-not-at-top

  conv = encoders._conv  # pylint: disable=protected-access
  w, depth, b = cfg["cnn_width"], cfg["cnn_depth"], cfg["opt_study_batch"]
  h, _, c_in = cfg["b3_image"]
  g_runs, rounds = 5, cfg["layer_rounds"]   # MTL + 4 STL runs per seed
  rng = np.random.default_rng(0)
  rows, total = {}, 0.0
  for i in range(depth):
    c_out = w * 2**i
    x = rng.normal(size=(b, h, h, c_in)).astype(np.float32)
    k = rng.normal(size=(3, 3, c_in, c_out)).astype(np.float32)
    g = rng.normal(size=(b, h, h, c_out)).astype(np.float32)
    g2 = rng.normal(size=(b, h // 2, h // 2, c_out)).astype(np.float32)
    fwd = _time(lambda x, k: conv(x, k, None), x, k, rounds=rounds)
    d_w = _time(lambda x, k, g: jax.vjp(lambda k: conv(x, k, None), k)[1](g)[0],
                x, k, g, rounds=rounds)
    # The first layer's input gradient is never needed (its input is data).
    d_x = 0.0 if i == 0 else _time(
        lambda x, k, g: jax.vjp(lambda x: conv(x, k, None), x)[1](g)[0],
        x, k, g, rounds=rounds)
    pool = _time(lambda y, g2: jax.vjp(
        lambda y: encoders.relu_pool(y, "max"), y)[1](g2)[0], g, g2,
                 rounds=rounds)
    name = f"stage {i}: {h}x{h}, {c_in}->{c_out}"
    rows[name] = {"fwd_ms": fwd * 1e3, "dw_ms": d_w * 1e3, "dx_ms": d_x * 1e3,
                  "relu_pool_ms": pool * 1e3}
    total += fwd + d_w + d_x + pool
    if i == 0:
      kg = rng.normal(size=(3, 3, c_in, g_runs * c_out)).astype(np.float32)
      gg = rng.normal(size=(b, h, h, g_runs * c_out)).astype(np.float32)
      wide_fwd = _time(lambda x, k: conv(x, k, None), x, kg, rounds=rounds)
      wide_dw = _time(lambda x, k, g: jax.vjp(
          lambda k: conv(x, k, None), k)[1](g)[0], x, kg, gg, rounds=rounds)
      first = {"runs": g_runs, "fwd_ms_per_run": wide_fwd * 1e3 / g_runs,
               "dw_ms_per_run": wide_dw * 1e3 / g_runs}
    c_in, h = c_out, h // 2
  # The steps themselves: one run (unrolled), and the study's program
  # (seeds x (MTL + 4 STL)), plain and fused, per run-step.
  one = dict(encoder="cnn", width=w, depth=depth, image_shape=cfg["b3_image"],
             tasks=cfg["tasks"], batch=b, run_map="scan")
  study = dict(one, seeds=tuple(range(cfg["opt_study_seeds"])),
               modes=("mtl", "stl"))
  setups = {"one run": JaxSetup(**one),
            "study, plain scan": JaxSetup(**study, fuse_stem=False),
            "study, fused first stage": JaxSetup(**study, fuse_stem=True)}
  timed = interleaved({k: s.runner() for k, s in setups.items()},
                      rounds=cfg["opt_rounds"], target_s=cfg["target_s"])
  steps = {k: timed[k]["median_s"] * 1e3 / setups[k].num_runs
           for k in setups}
  res["layers"] = {
      "program": (f"CNN w{w}, depth {depth}, batch {b} of "
                  f"{cfg['b3_image']}"),
      "rows": rows, "sum_of_pieces_ms": total * 1e3,
      "first_layer_fused": first, "run_step_ms": steps}
