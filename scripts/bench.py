#!/usr/bin/env python
"""mtljax benchmarks (issue 6): throughput, efficiency, runs per compile, ...

    python scripts/bench.py                        # everything (~10 min, 2 cores)
    python scripts/bench.py --smoke --out /tmp/b.json   # tiny sizes, for CI
    python scripts/bench.py --only b1,b2,b2b       # some sections
    python scripts/bench.py --reproduce-times      # + `python -m mtljax reproduce`

Sections (docs/PERFORMANCE.md describes them and records results):

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
  opt  what the optimizations buy: each one switched off, side by side
       with it switched on (custom matmul and convolution backward passes).

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
import contextlib
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

SECTIONS = ("b1", "b2", "b2b", "b3", "b4", "b5", "b6", "b7", "opt")

# Sizes. "full" is what docs/PERFORMANCE.md reports; "smoke" only checks that
# every code path runs (its numbers mean nothing).
FULL = dict(
    rounds=7, target_s=0.4,
    # b1/b2: the reference model.
    mlp_in=(32, 32, 3), mlp_width=1024, mlp_depth=2, mlp_batch=256, tasks=4,
    peak_n=2048,
    # b3: the quick experiment's models.
    b3_rs=(1, 4, 8, 16), b3_batch=64, b3_image=(32, 32, 3), cnn_width=8, cnn_depth=3,
    small_mlp_width=64, b3_r_sweep=8,
    b3_widths={"mlp": (4, 16, 64, 256, 1024), "cnn": (2, 4, 8, 16, 32)},
    b3_rounds=4, b3_target_s=0.25,
    # b4: E1-quick-like program on the built dataset.
    b4_split=(10000, 1000, 1000), b4_seeds=5, b4_batch=64, b4_steps=60,
    b4_rounds=5,
    # b5
    b5_steps=5,
    # b7: 8 seeds x (MTL + 4 STL) for 100 steps.
    b7_seeds=8, b7_steps=100, b7_width=8, b7_batch=64, b7_examples=4096,
    b7_torch_tasks=(-1, 0, 1, 2, 3),  # -1: the MTL network, t: STL on task t
    b7_torch_seeds=2,  # seeds whose PyTorch processes are timed (--b7-all)
    b2b_torch_compile=True,
    # opt: b1's MLP with 2 vmapped runs; the quick CNN with 4 scanned runs.
    opt_mlp_runs=2, opt_cnn_runs=4, opt_rounds=5,
)
SMOKE = dict(
    rounds=2, target_s=0.01,
    mlp_in=(8, 8, 3), mlp_width=32, mlp_depth=2, mlp_batch=16, tasks=4,
    peak_n=128,
    b3_rs=(2,), b3_batch=8, b3_image=(8, 8, 3), cnn_width=2, cnn_depth=2,
    small_mlp_width=8, b3_r_sweep=2, b3_widths={"mlp": (8,), "cnn": (2,)},
    b3_rounds=2, b3_target_s=0.01,
    b4_split=(600, 200, 200), b4_seeds=2, b4_batch=16, b4_steps=4,
    b4_rounds=2,
    b5_steps=2,
    b7_seeds=1, b7_steps=3, b7_width=2, b7_batch=16, b7_examples=256,
    b7_torch_tasks=(-1, 0), b7_torch_seeds=1,
    b2b_torch_compile=False,  # b1 already covers the torch.compile path
    opt_mlp_runs=2, opt_cnn_runs=2, opt_rounds=2,
)


# --------------------------------------------------------------------------
# Timing and environment helpers.


def _median(xs):
  return float(statistics.median(xs)) if xs else float("nan")


def interleaved(fns: dict, *, rounds: int, target_s: float) -> dict:
  """Round-robin timing of several variants.

  Args:
    fns: {name: run(n)}; `run(n)` performs n iterations and returns once they
      are finished (blocks on the device).
    rounds: timed rounds per variant.
    target_s: wall time one round of one variant aims for.

  Returns:
    {name: {"median_s", "min_s", "iters", "rounds"}}, seconds per iteration.
  """
  iters = {}
  for name, fn in fns.items():
    fn(1)
    fn(1)  # warm-up: compilation, allocator, thread pools
    t0 = time.perf_counter()
    fn(1)
    one = time.perf_counter() - t0
    iters[name] = max(1, int(round(target_s / max(one, 1e-7))))
  times = {name: [] for name in fns}
  names = list(fns)
  for r in range(rounds):
    k = r % len(names)  # rotate the order: no variant is always first
    for name in names[k:] + names[:k]:
      t0 = time.perf_counter()
      fns[name](iters[name])
      times[name].append((time.perf_counter() - t0) / iters[name])
  return {name: {"median_s": _median(ts), "min_s": min(ts),
                 "iters": iters[name], "rounds": len(ts)}
          for name, ts in times.items()}


def load_average() -> list[float] | None:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def _torch():
  """The torch module, or None when the `bench` extra is not installed."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    return torch
  except ImportError:
    return None


_CACHE = {}  # across sections, not written out (e.g. b1's compiled HLO)

NO_TORCH = "torch not installed (pip install -e '.[bench]')"


def _err(e: BaseException) -> str:
  lines = [l for l in str(e).strip().splitlines() if l.strip()]
  msg = lines[0] if lines else ""
  return f"{type(e).__name__}: {msg}"[:300]


def environment() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  torch = _torch()
  return {
      "cpu": _cpu_model(), "nproc": os.cpu_count(),
      "platform": platform.platform(), "python": platform.python_version(),
      "jax": jax.__version__, "jaxlib": jaxlib.__version__,
      "backend": jax.default_backend(),
      "devices": [d.device_kind for d in jax.devices()],
      "torch": torch.__version__ if torch else None,
      "torch_threads": torch.get_num_threads() if torch else None,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


# --------------------------------------------------------------------------
# mtljax set-up shared by the sections.


def fake_batch(seed, s, b, image_shape, t, p_obs=0.8):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  return {
      "image": rng.normal(size=(s, b) + tuple(image_shape)).astype(np.float32),
      "labels": rng.integers(0, 2, (s, b, t)).astype(np.float32),
      "mask": rng.random((s, b, t)) < p_obs,
  }


class JaxSetup:
  """One compiled mtljax step with its state, specs and a device batch.

  Attributes:
    step, state, specs, batch, mesh, graphdef, tx, num_runs.
  """

  def __init__(self, *, encoder, width, depth, image_shape, tasks, batch,
               seeds=(0,), modes=("mtl",), dtype="float32", run_map="vmap",
               donate=True, num_devices=None, lrs=(1e-3,)):
    import jax  # pylint: disable=g-import-not-at-top
    from mtljax import config as config_lib  # pylint: disable=g-import-not-at-top
    from mtljax import parallel, runs  # pylint: disable=g-import-not-at-top
    from mtljax import step as step_lib  # pylint: disable=g-import-not-at-top
    cfg = config_lib.default_config()
    cfg.model.encoder, cfg.model.width, cfg.model.depth = encoder, width, depth
    cfg.model.dtype = dtype
    cfg.modes, cfg.optimizer.learning_rates = tuple(modes), tuple(lrs)
    prog = runs.build_programs(cfg, image_shape, tasks)[0]
    self.tx = step_lib.make_optimizer(cfg.optimizer, 1000)
    self.graphdef, params = step_lib.init_params(
        cfg.model, image_shape, tasks, list(seeds), prog.num_groups)
    self.mesh = parallel.make_mesh(num_devices)
    rep = parallel.replicated(self.mesh)
    self.state = jax.device_put(step_lib.init_state(params, self.tx), rep)
    self.specs = jax.device_put(prog.specs(list(seeds)), rep)
    self.batch = parallel.global_batch(
        fake_batch(0, len(seeds), batch, image_shape, tasks), self.mesh)
    self.step = step_lib.make_train_step(
        self.graphdef, self.tx, normalize="per_example", mesh=self.mesh,
        donate=donate, run_map=run_map)
    self.num_runs = len(seeds) * prog.num_groups
    self.metrics = None

  def compile_seconds(self) -> dict:
    """Trace+lower and compile times of the step (no execution)."""
    t0 = time.perf_counter()
    lowered = self.step.lower(self.state, self.specs, self.batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    self.hlo_text = compiled.as_text()
    # Run the executable just compiled: jit's own cache would compile again.
    self.step = compiled
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older jax: one dict per device program
      cost = cost[0] if cost else {}
    return {"lower_s": t1 - t0, "compile_s": t2 - t1,
            "xla_flops": float((cost or {}).get("flops", float("nan")))}

  def runner(self):
    """run(n): n steps back to back, then wait. Metrics stay on device."""
    import jax  # pylint: disable=g-import-not-at-top

    def run(n):
      state = self.state
      for _ in range(n):
        state, self.metrics = self.step(state, self.specs, self.batch)
      jax.block_until_ready(state)
      self.state = state
    return run


def plain_jax_mlp_runner(in_features, width, depth, tasks, batch):
  """A minimal hand-written JAX step for the same MLP (no framework).

  What a user would write from scratch: one network, masked loss, Adam. It
  separates the cost of mtljax's extras (runs axes, per-task losses, grad
  norm, non-finite guard) from XLA's own speed.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  keys = jax.random.split(jax.random.key(0), depth + 2)
  sizes = [in_features] + [width] * depth
  params = {f"w{i}": jax.random.normal(keys[i], (a, b)) / math.sqrt(a)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))}
  params.update({f"b{i}": jnp.zeros(b) for i, b in enumerate(sizes[1:])})
  params["wh"] = jax.random.normal(keys[-1], (width, tasks)) / math.sqrt(width)
  params["bh"] = jnp.zeros(tasks)
  tx = optax.adam(1e-3)
  b = fake_batch(0, 1, batch, (in_features,), tasks)
  x, y, m = (jnp.asarray(b[k][0]) for k in ("image", "labels", "mask"))

  def loss_fn(p, x, y, m):
    h = x
    for i in range(depth):
      h = jax.nn.relu(h @ p[f"w{i}"] + p[f"b{i}"])
    z = h @ p["wh"] + p["bh"]
    l = optax.sigmoid_binary_cross_entropy(z, y)
    return jnp.where(m, l, 0.0).sum() / batch

  def step(p, s, x, y, m):
    g = jax.grad(loss_fn)(p, x, y, m)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  step = jax.jit(step, donate_argnums=(0, 1))
  box = [params, tx.init(params)]

  def run(n):
    p, s = box
    for _ in range(n):
      p, s = step(p, s, x, y, m)
    jax.block_until_ready(p)
    box[:] = [p, s]
  run.compiled_text = lambda: step.lower(box[0], box[1], x, y, m).compile(
  ).as_text()
  return run


# --------------------------------------------------------------------------
# PyTorch baselines.


def torch_mlp(torch, in_features, width, depth, tasks):
  layers, n = [], in_features
  for _ in range(depth):
    layers += [torch.nn.Linear(n, width), torch.nn.ReLU()]
    n = width
  layers.append(torch.nn.Linear(n, tasks))
  return torch.nn.Sequential(torch.nn.Flatten(), *layers)


def torch_cnn(torch, width, depth, tasks, in_channels=3):
  """The CNNEncoder's architecture: [conv3x3 -> ReLU -> 2x2 avg-pool] x depth."""
  layers, c = [], in_channels
  for i in range(depth):
    layers += [torch.nn.Conv2d(c, width * 2**i, 3, padding=1),
               torch.nn.ReLU(), torch.nn.AvgPool2d(2)]
    c = width * 2**i
  layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
             torch.nn.Linear(c, tasks)]
  return torch.nn.Sequential(*layers)


def _torch_adam(torch, params):
  # fused=True is PyTorch's fastest CPU Adam (one kernel for all tensors);
  # older builds without it fall back to the default implementation.
  try:
    return torch.optim.Adam(params, lr=1e-3, fused=True)
  except (RuntimeError, TypeError, ValueError):
    return torch.optim.Adam(params, lr=1e-3)


def torch_step_runner(torch, net, batch, *, compile_step: bool,
                      bf16: bool = False):
  """run(n) for the same step in PyTorch: masked loss, backward, Adam.

  With compile_step the whole step (forward, loss, backward, optimizer) is
  one torch.compile'd function.
  """
  opt = _torch_adam(torch, net.parameters())
  x = torch.from_numpy(batch["image"][0]).permute(0, 3, 1, 2).contiguous() \
      if batch["image"].ndim == 5 else torch.from_numpy(batch["image"][0])
  y = torch.from_numpy(batch["labels"][0])
  m = torch.from_numpy(batch["mask"][0].astype("float32"))
  bsz = x.shape[0]
  bce = torch.nn.functional.binary_cross_entropy_with_logits

  def step():
    opt.zero_grad(set_to_none=True)
    ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if bf16
           else contextlib.nullcontext())
    with ctx:
      z = net(x)
    loss = (bce(z.float(), y, reduction="none") * m).sum() / bsz
    loss.backward()
    opt.step()
    return loss

  fn = torch.compile(step) if compile_step else step
  t0 = time.perf_counter()
  fn()  # compiles when compile_step
  first = time.perf_counter() - t0

  def run(n):
    for _ in range(n):
      fn()
  run.first_call_s = first
  return run


# --------------------------------------------------------------------------
# B1, B2, B2b: the reference MLP.


def mlp_matmul_flops(batch, in_features, width, depth, tasks) -> float:
  """FLOPs of the matmuls of one training step (forward + backward).

  Forward: one [B, n_in] x [n_in, n_out] product per layer; backward: the
  weight gradient of every layer and the input gradient of every layer but
  the first (the images need none). Elementwise work and Adam are excluded
  (they are O(params + activations), ~1% of the FLOPs here).
  """
  sizes = [in_features] + [width] * depth + [tasks]
  layers = list(zip(sizes[:-1], sizes[1:]))
  fwd = sum(2 * batch * a * b for a, b in layers)
  bwd_w = fwd
  bwd_x = sum(2 * batch * a * b for a, b in layers[1:])
  return float(fwd + bwd_w + bwd_x)


_HLO_DEF = re.compile(r"%([\w.\-]+) = (\w+)\[([\d,]*)\]")
_HLO_DOT = re.compile(
    r"%[\w.\-]+ = (\w+)\[[\d,]*\]\S* dot\(%([\w.\-]+), %([\w.\-]+)\)"
    r"(.*)")


def hlo_dots(text: str) -> list[dict]:
  """The dots of a compiled HLO module: operand shapes and dimension numbers.

  These are the matmuls XLA actually runs (after dead-code elimination), in
  the operand layout it chose, wherever they sit (plain or inside fusions).
  """
  shapes = {m.group(1): (m.group(2), tuple(int(d) for d in m.group(3).split(",")
                                           if d))
            for m in _HLO_DEF.finditer(text)}
  dots = []
  for m in _HLO_DOT.finditer(text):
    attrs = m.group(4)

    def dims(key):
      got = re.search(key + r"=\{([\d,]*)\}", attrs)
      return tuple(int(d) for d in got.group(1).split(",") if d) if got else ()
    (dtype, lhs), (_, rhs) = shapes[m.group(2)], shapes[m.group(3)]
    dots.append({"dtype": dtype, "out_dtype": m.group(1), "lhs": lhs,
                 "rhs": rhs,
                 "dimension_numbers": ((dims("lhs_contracting_dims"),
                                        dims("rhs_contracting_dims")),
                                       (dims("lhs_batch_dims"),
                                        dims("rhs_batch_dims")))})
  return dots


def _dot_flops(d) -> float:
  (lc, _), (lb, _) = d["dimension_numbers"]
  k = math.prod(d["lhs"][i] for i in lc)
  out = math.prod(d["lhs"]) // k * math.prod(
      n for i, n in enumerate(d["rhs"]) if i not in d["dimension_numbers"][0][1]
      and i not in d["dimension_numbers"][1][1])
  return 2.0 * out * k


def time_dots(dots, cfg) -> list[dict]:
  """Times each dot on its own (jitted lax.dot_general), interleaved."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  dtypes = {"f32": jnp.float32, "bf16": jnp.bfloat16}
  fns, rows = {}, {}
  for i, d in enumerate(dots):
    (lc, rc), _ = d["dimension_numbers"]
    name = (f"#{i} {d['dtype']}{list(d['lhs'])}·{list(d['rhs'])} "
            f"contract {list(lc)},{list(rc)}")
    a = jax.random.normal(jax.random.key(3), d["lhs"], dtypes[d["dtype"]])
    b = jax.random.normal(jax.random.key(4), d["rhs"], dtypes[d["dtype"]])
    pet = dtypes[d["out_dtype"]]
    f = jax.jit(lambda a, b, dn=d["dimension_numbers"], pet=pet:
                jax.lax.dot_general(a, b, dn, preferred_element_type=pet))

    def run(k, f=f, a=a, b=b):
      for _ in range(k):
        out = f(a, b)
      out.block_until_ready()
    fns[name] = run
    rows[name] = _dot_flops(d)
  timed = interleaved(fns, rounds=cfg["rounds"], target_s=cfg["target_s"] / 4)
  return [{"dot": name, "ms": tm["median_s"] * 1e3, "gflop": rows[name] / 1e9,
           "gflops_per_s": rows[name] / tm["median_s"] / 1e9}
          for name, tm in timed.items()]


def section_b1(cfg, res):
  torch = _torch()
  in_features = math.prod(cfg["mlp_in"])
  w, d, t, bsz = cfg["mlp_width"], cfg["mlp_depth"], cfg["tasks"], cfg["mlp_batch"]
  mtl = JaxSetup(encoder="mlp", width=w, depth=d, image_shape=cfg["mlp_in"],
                 tasks=t, batch=bsz)
  info = mtl.compile_seconds()
  _CACHE["b1_hlo"] = mtl.hlo_text
  import jax  # pylint: disable=g-import-not-at-top
  n_params = sum(x.size for x in jax.tree.leaves(mtl.state["params"]))
  fns = {"mtljax": mtl.runner(),
         "jax (plain step)": plain_jax_mlp_runner(in_features, w, d, t, bsz)}
  rows, notes = {}, {}
  if torch is None:
    notes["torch eager"] = notes["torch.compile"] = NO_TORCH
  else:
    batch = fake_batch(0, 1, bsz, (in_features,), t)
    torch.manual_seed(0)
    fns["torch eager"] = torch_step_runner(
        torch, torch_mlp(torch, in_features, w, d, t), batch,
        compile_step=False)
    try:
      fns["torch.compile"] = torch_step_runner(
          torch, torch_mlp(torch, in_features, w, d, t), batch,
          compile_step=True)
      notes["torch.compile"] = (f"compiled in "
                                f"{fns['torch.compile'].first_call_s:.1f} s")
    except Exception as e:  # pylint: disable=broad-except
      notes["torch.compile"] = "failed: " + _err(e)
  timed = interleaved(fns, rounds=cfg["rounds"], target_s=cfg["target_s"])
  flops = mlp_matmul_flops(bsz, in_features, w, d, t)
  for name, tm in timed.items():
    rows[name] = {"step_ms": tm["median_s"] * 1e3,
                  "examples_per_s": bsz / tm["median_s"],
                  "gflops_per_s": flops / tm["median_s"] / 1e9}
  for name, note in notes.items():
    rows.setdefault(name, {})["note"] = note
  torch_best = max((r["examples_per_s"] for n, r in rows.items()
                    if n.startswith("torch") and "examples_per_s" in r),
                   default=None)
  res["b1"] = {
      "model": f"MLP {in_features}->{'->'.join([str(w)] * d)} (ReLU), "
               f"{t} one-logit heads, batch {bsz}, Adam, float32",
      "rows": rows, "matmul_flops_per_step": flops, "param_count": int(n_params),
      "xla_flops_per_step": info["xla_flops"],
      "mtljax_compile_s": info["compile_s"],
      "ratio_vs_best_torch": (rows["mtljax"]["examples_per_s"] / torch_best
                              if torch_best else None),
      "goal": ">= 1.0",
  }


def _stream_bandwidth(cfg) -> float:
  """GB/s of a streaming elementwise update (a += b, in place), as XLA runs it."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n = 16 * 2**20 if cfg is FULL else 2**16  # 64 MiB per array: beyond caches
  box = [jnp.ones(n, jnp.float32)]
  b = jnp.ones(n, jnp.float32)
  f = jax.jit(lambda a, b: a + 0.5 * b, donate_argnums=0)

  def run(k):
    a = box[0]
    for _ in range(k):
      a = f(a, b)
    a.block_until_ready()
    box[0] = a
  t = interleaved({"stream": run}, rounds=cfg["rounds"],
                  target_s=cfg["target_s"] / 2)["stream"]["median_s"]
  return 3 * 4 * n / t / 1e9


def _peak_matmul(cfg, res_b2):
  """Best f32 matmul FLOP/s: large jnp.dot and torch.mm, interleaved."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  torch = _torch()
  n = cfg["peak_n"]
  a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)

  def run_jax(k):
    for _ in range(k):
      out = dot(a, b)
    out.block_until_ready()
  fns = {"jnp.dot (XLA)": run_jax}
  if torch is not None:
    ta, tb = torch.randn(n, n), torch.randn(n, n)

    def run_torch(k):
      for _ in range(k):
        torch.mm(ta, tb)
    fns["torch.mm"] = run_torch
  timed = interleaved(fns, rounds=cfg["rounds"], target_s=cfg["target_s"])
  flops = 2.0 * n ** 3
  res_b2["peak_matmul"] = {name: {"n": n, "gflops_per_s": flops / tm["median_s"] / 1e9}
                           for name, tm in timed.items()}
  return max(v["gflops_per_s"] for v in res_b2["peak_matmul"].values())


def section_b2(cfg, res):
  if "b1" not in res:
    section_b1(cfg, res)
  out = {}
  peak = _peak_matmul(cfg, out)
  dots = time_dots(hlo_dots(_CACHE["b1_hlo"]), cfg)
  b1 = res["b1"]
  out["step_matmuls"] = dots
  out["sum_of_matmuls_ms"] = sum(v["ms"] for v in dots)
  out["step_matmul_gflop"] = sum(v["gflop"] for v in dots)
  out["best_peak_gflops_per_s"] = peak
  # The optimizer cannot beat memory: Adam reads params, grads and both
  # moments and writes params and moments, 7 x 4 bytes per parameter.
  gbs = _stream_bandwidth(cfg)
  adam_ms = 7 * 4 * b1["param_count"] / (gbs * 1e9) * 1e3
  floor_ms = b1["matmul_flops_per_step"] / (peak * 1e9) * 1e3 + adam_ms
  out["stream_gb_per_s"] = gbs
  out["adam_floor_ms"] = adam_ms
  out["step_floor_ms"] = floor_ms
  out["efficiency_bound"] = (b1["matmul_flops_per_step"] / (floor_ms / 1e3)
                             / (peak * 1e9))
  out["rows"] = {}
  for name, row in b1["rows"].items():
    if "step_ms" in row:
      out["rows"][name] = {
          "step_ms": row["step_ms"], "gflops_per_s": row["gflops_per_s"],
          "efficiency": row["gflops_per_s"] / peak}
  out["efficiency"] = out["rows"]["mtljax"]["efficiency"]
  out["goal"] = ">= 0.90"
  res["b2"] = out


def _peak_bf16_matmul(cfg) -> dict:
  """GFLOP/s of n^3 bf16 matmuls: XLA with and without f32 accumulation, torch."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  torch = _torch()
  n = cfg["peak_n"]
  a = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
  b = jax.random.normal(jax.random.key(2), (n, n), jnp.bfloat16)
  variants = {
      "jnp.dot bf16 (f32 accumulation)": jax.jit(
          lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32)),
      "jnp.dot bf16": jax.jit(jnp.dot)}

  def jax_runner(f):
    def run(k):
      for _ in range(k):
        out = f(a, b)
      out.block_until_ready()
    return run
  fns = {name: jax_runner(f) for name, f in variants.items()}
  if torch is not None:
    ta = torch.randn(n, n, dtype=torch.bfloat16)
    tb = torch.randn(n, n, dtype=torch.bfloat16)

    def run_torch(k):
      for _ in range(k):
        torch.mm(ta, tb)
    fns["torch.mm bf16"] = run_torch
  timed = interleaved(fns, rounds=cfg["rounds"], target_s=cfg["target_s"])
  return {name: 2.0 * n ** 3 / tm["median_s"] / 1e9
          for name, tm in timed.items()}


def _bf16_wgrad_dots(cfg) -> dict:
  """ms of b1's largest weight-gradient dot (x^T g), bf16 with f32 accumulation.

  As the step writes it (contracting over the batch axis of both operands),
  against the same product with x already transposed in memory, and in f32.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  b, n, m = cfg["mlp_batch"], math.prod(cfg["mlp_in"]), cfg["mlp_width"]
  x = jax.random.normal(jax.random.key(1), (b, n), jnp.bfloat16)
  xt = jnp.asarray(x.T)  # materialised outside the jit: a real [n, b] array
  g = jax.random.normal(jax.random.key(2), (b, m), jnp.bfloat16)
  f32 = jnp.float32
  variants = {
      "bf16, contract batch axes (as in the step)": (jax.jit(
          lambda x, g: jax.lax.dot_general(x, g, (((0,), (0,)), ((), ())),
                                           preferred_element_type=f32)), x),
      "bf16, x pre-transposed": (jax.jit(
          lambda xt, g: jax.lax.dot_general(xt, g, (((1,), (0,)), ((), ())),
                                            preferred_element_type=f32)), xt),
      "f32, contract batch axes": (jax.jit(
          lambda x, g: jax.lax.dot_general(x.astype(f32), g.astype(f32),
                                           (((0,), (0,)), ((), ())))), x),
  }

  def runner(f, a):
    def run(k):
      for _ in range(k):
        out = f(a, g)
      out.block_until_ready()
    return run
  timed = interleaved({k: runner(*v) for k, v in variants.items()},
                      rounds=cfg["rounds"], target_s=cfg["target_s"])
  return {k: tm["median_s"] * 1e3 for k, tm in timed.items()}


def section_b2b(cfg, res):
  torch = _torch()
  in_features = math.prod(cfg["mlp_in"])
  w, d, t, bsz = cfg["mlp_width"], cfg["mlp_depth"], cfg["tasks"], cfg["mlp_batch"]
  fns, notes = {}, {}
  for dtype in ("float32", "bfloat16"):
    s = JaxSetup(encoder="mlp", width=w, depth=d, image_shape=cfg["mlp_in"],
                 tasks=t, batch=bsz, dtype=dtype)
    fns[f"mtljax {dtype}"] = s.runner()
  if torch is None:
    notes["torch bf16 autocast"] = NO_TORCH
  else:
    batch = fake_batch(0, 1, bsz, (in_features,), t)
    for compiled in (False, True):
      name = "torch.compile bf16 autocast" if compiled else "torch eager bf16 autocast"
      if compiled and not cfg["b2b_torch_compile"]:
        notes[name] = "skipped (--smoke)"
        continue
      try:
        torch.manual_seed(0)
        fns[name] = torch_step_runner(
            torch, torch_mlp(torch, in_features, w, d, t), batch,
            compile_step=compiled, bf16=True)
      except Exception as e:  # pylint: disable=broad-except
        notes[name] = "failed: " + _err(e)
  timed = interleaved(fns, rounds=cfg["rounds"], target_s=cfg["target_s"])
  rows = {name: {"step_ms": tm["median_s"] * 1e3,
                 "examples_per_s": bsz / tm["median_s"]}
          for name, tm in timed.items()}
  for name, note in notes.items():
    rows.setdefault(name, {})["note"] = note
  torch_best = max((r["examples_per_s"] for n, r in rows.items()
                    if n.startswith("torch") and "examples_per_s" in r),
                   default=None)
  mt = rows["mtljax bfloat16"]["examples_per_s"]
  res["b2b"] = {
      "rows": rows,
      # The kernels underneath: what each library's bf16 matmul reaches here.
      "peak_bf16_matmul_gflops_per_s": _peak_bf16_matmul(cfg),
      "wgrad_dot_ms": _bf16_wgrad_dots(cfg),
      "bf16_speedup_over_f32": mt / rows["mtljax float32"]["examples_per_s"],
      "ratio_vs_best_torch_bf16": mt / torch_best if torch_best else None,
  }


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
  noop = jax.jit(lambda st, specs, batch: dict(st, step=st["step"] + 1),
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
  from mtljax.step import default_run_map  # pylint: disable=g-import-not-at-top
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
    run_map = default_run_map(model)
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


def _data_dir(args) -> str:
  return args.data_dir or os.path.join(tempfile.gettempdir(),
                                       "mtljax_bench_data")


def section_b4(cfg, res, args):
  import jax  # pylint: disable=g-import-not-at-top
  from mtljax import data as data_lib  # pylint: disable=g-import-not-at-top
  from mtljax import parallel  # pylint: disable=g-import-not-at-top
  from mtljax.step import default_run_map  # pylint: disable=g-import-not-at-top
  data_dir = _data_dir(args)
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
  run_map = default_run_map("cnn")
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
  from mtljax import parallel  # pylint: disable=g-import-not-at-top
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
             for a, b in zip(jax.tree.leaves(s1["params"]),
                             jax.tree.leaves(s2["params"])))
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
  out = _run_worker("b5", cfg, env=env)
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
  from mtljax import runs  # pylint: disable=g-import-not-at-top
  from mtljax.step import default_run_map  # pylint: disable=g-import-not-at-top
  spec = os.path.join(REPO, "experiments", "e1_mtl_vs_stl.py") + (
      ":smoke" if cfg is SMOKE else ":quick")
  c = config_lib.load_config(spec)
  shape = (32, 32, 3)
  progs = runs.build_programs(c, shape, 4)
  seeds = tuple(range(c.num_seeds))
  rows = {}
  for prog in progs:
    for run_map in sorted({default_run_map(c.model.encoder), "vmap", "unroll"}):
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


# --------------------------------------------------------------------------
# B7: a study end to end.


def _b7_data(cfg, args, path):
  """Writes the study's training data (images, labels, masks) to an .npz."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtljax import data as data_lib  # pylint: disable=g-import-not-at-top
  try:
    d = data_lib.load_split("mtl_scenes", "train", _data_dir(args),
                            cfg["b4_split"], cfg["b7_examples"], log=None)
    images = data_lib.normalize(d["image"])
    labels, mask = (d["labels"] == 1).astype(np.float32), d["labels"] >= 0
    source = "mtl_scenes"
  except Exception:  # pylint: disable=broad-except  # not built: synthetic
    b = fake_batch(7, 1, cfg["b7_examples"], (32, 32, 3), 4)
    images, labels, mask = b["image"][0], b["labels"][0], b["mask"][0]
    source = "synthetic"
  np.savez(path, image=images, labels=labels, mask=mask)
  return source


def _b7_order(seed, steps, batch, n):
  """Example indices of each step for one seed: the same in JAX and PyTorch."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  per_epoch = n // batch
  idx = [rng.permutation(n)[:per_epoch * batch].reshape(per_epoch, batch)
         for _ in range(-(-steps // per_epoch))]
  return np.concatenate(idx)[:steps]


def worker_b7_jax(cfg, data_path) -> dict:
  """All runs of the study in one mtljax program (one process)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtljax import parallel  # pylint: disable=g-import-not-at-top
  from mtljax.step import default_run_map  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  d = np.load(data_path)
  images, labels, mask = d["image"], d["labels"], d["mask"]
  seeds = tuple(range(cfg["b7_seeds"]))
  steps, bsz = cfg["b7_steps"], cfg["b7_batch"]
  s = JaxSetup(encoder="cnn", width=cfg["b7_width"], depth=cfg["cnn_depth"],
               image_shape=images.shape[1:], tasks=labels.shape[1], batch=bsz,
               seeds=seeds, modes=("mtl", "stl"),
               run_map=default_run_map("cnn"))
  orders = np.stack([_b7_order(sd, steps, bsz, len(images)) for sd in seeds])
  state, m = s.state, None
  t_first = None
  for i in range(steps):
    idx = orders[:, i]
    batch = {"image": images[idx], "labels": labels[idx], "mask": mask[idx]}
    state, m = s.step(state, s.specs, parallel.global_batch(batch, s.mesh))
    if i == 0:
      jax.block_until_ready(state)
      t_first = time.perf_counter()
  loss = np.asarray(m["loss"])
  t_end = time.perf_counter()
  return {"runs": s.num_runs, "run_map": default_run_map("cnn"),
          "final_loss_mean": float(loss.mean()),
          "setup_and_first_step_s": t_first - t0,
          "other_steps_s": t_end - t_first}


def worker_b7_torch(cfg, data_path, seed, task) -> dict:
  """One run (MTL if task < 0, else STL on `task`) in its own process."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  d = np.load(data_path)
  images = torch.from_numpy(d["image"]).permute(0, 3, 1, 2).contiguous()
  labels, mask = torch.from_numpy(d["labels"]), torch.from_numpy(
      d["mask"].astype(np.float32))
  if task >= 0:  # an STL network: one head, its task's labels only
    labels, mask = labels[:, task:task + 1], mask[:, task:task + 1]
  torch.manual_seed(seed)
  net = torch_cnn(torch, cfg["b7_width"], cfg["cnn_depth"], labels.shape[1])
  opt = _torch_adam(torch, net.parameters())
  bce = torch.nn.functional.binary_cross_entropy_with_logits
  steps, bsz = cfg["b7_steps"], cfg["b7_batch"]
  order = torch.from_numpy(_b7_order(seed, steps, bsz, len(images)))
  for i in range(steps):
    idx = order[i]
    opt.zero_grad(set_to_none=True)
    loss = (bce(net(images[idx]), labels[idx], reduction="none")
            * mask[idx]).sum() / bsz
    loss.backward()
    opt.step()
  return {"final_loss": float(loss)}


def section_b7(cfg, res, args):
  torch = _torch()
  work = tempfile.mkdtemp(prefix="mtljax_bench_b7_")
  try:
    path = os.path.join(work, "train.npz")
    source = _b7_data(cfg, args, path)
    t0 = time.perf_counter()
    jax_out = _run_worker("b7-jax", cfg, extra=[path])
    jax_s = time.perf_counter() - t0
    out = {"study": f"{cfg['b7_seeds']} seeds x (MTL + 4 STL) CNN width "
                    f"{cfg['b7_width']}, batch {cfg['b7_batch']}, "
                    f"{cfg['b7_steps']} steps", "data": source,
           "mtljax_one_process_s": jax_s, "mtljax": jax_out}
    if torch is None:
      out["torch_note"] = NO_TORCH
    else:
      # Every PyTorch process costs the same (start-up + the same steps), so
      # by default only the processes of some seeds are timed and the total
      # is scaled up; --b7-all times all of them (4 minutes here).
      timed_seeds = (cfg["b7_seeds"] if args.b7_all else
                     min(cfg["b7_torch_seeds"], cfg["b7_seeds"]))
      per_run = []
      for seed in range(timed_seeds):
        for task in cfg["b7_torch_tasks"]:
          t1 = time.perf_counter()
          # PyTorch as users run it: glibc's default allocator settings.
          _run_worker("b7-torch", cfg, extra=[path, str(seed), str(task)],
                      env=dict(os.environ, MTLJAX_MALLOC_TUNING="0"))
          per_run.append(time.perf_counter() - t1)
      torch_s = sum(per_run) * cfg["b7_seeds"] / timed_seeds
      out.update({"torch_process_per_run_s": torch_s,
                  "torch_runs": cfg["b7_seeds"] * len(cfg["b7_torch_tasks"]),
                  "torch_runs_timed": len(per_run),
                  "torch_median_process_s": _median(per_run),
                  "speedup": torch_s / jax_s})
    out["goal"] = ">= 5x"
    res["b7"] = out
  finally:
    shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------
# opt: each optimization off vs on.


@contextlib.contextmanager
def _patched(module, name, value):
  old = getattr(module, name)
  setattr(module, name, value)
  try:
    yield
  finally:
    setattr(module, name, old)


def section_opt(cfg, res):
  """Steps/s with each of mtljax's custom backward passes on and off.

  The layers read `encoders._dot_general` / `_conv_general_dilated` when they
  are built, so patching them before a JaxSetup builds the plain-JAX version
  of the same step.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from mtljax.models import encoders  # pylint: disable=g-import-not-at-top

  def plain_dot(lhs, rhs, dimension_numbers, precision=None,
                preferred_element_type=None, **kw):
    return jax.lax.dot_general(lhs, rhs, dimension_numbers,
                               precision=precision,
                               preferred_element_type=preferred_element_type,
                               **kw)

  plain_conv = jax.lax.conv_general_dilated
  r_mlp, r_cnn = cfg["opt_mlp_runs"], cfg["opt_cnn_runs"]
  cases = {
      "matmul backward": dict(
          what=f"b1's MLP, {r_mlp} runs vmapped", patch=("_dot_general", plain_dot),
          setup=dict(encoder="mlp", width=cfg["mlp_width"],
                     depth=cfg["mlp_depth"], image_shape=cfg["mlp_in"],
                     tasks=cfg["tasks"], batch=cfg["mlp_batch"],
                     seeds=tuple(range(r_mlp)), run_map="vmap")),
      "conv backward": dict(
          what=f"quick CNN w{cfg['cnn_width']}, {r_cnn} runs, scan",
          patch=("_conv_general_dilated", plain_conv),
          setup=dict(encoder="cnn", width=cfg["cnn_width"],
                     depth=cfg["cnn_depth"], image_shape=cfg["b3_image"],
                     tasks=cfg["tasks"], batch=cfg["b3_batch"],
                     seeds=tuple(range(r_cnn)), run_map="scan")),
  }
  out = {}
  for name, c in cases.items():
    fns = {"on": JaxSetup(**c["setup"]).runner()}
    with _patched(encoders, *c["patch"]):
      fns["off"] = JaxSetup(**c["setup"]).runner()
    timed = interleaved(fns, rounds=cfg["opt_rounds"], target_s=cfg["target_s"])
    on, off = timed["on"]["median_s"], timed["off"]["median_s"]
    out[name] = {"program": c["what"], "on_ms": on * 1e3, "off_ms": off * 1e3,
                 "speedup": off / on}
  # The allocator setting is per process: one worker with it, one without.
  r_malloc = cfg["opt_mlp_runs"]
  on_off = {}
  for flag in ("1", "0"):
    on_off[flag] = _run_worker("opt-malloc", cfg, env=dict(
        os.environ, MTLJAX_MALLOC_TUNING=flag))
  out["host allocator (mtljax.hostmem)"] = {
      "program": f"b1's MLP, {r_malloc} runs unrolled",
      "on_ms": on_off["1"]["step_ms"], "off_ms": on_off["0"]["step_ms"],
      "speedup": on_off["0"]["step_ms"] / on_off["1"]["step_ms"],
      "page_faults_per_step": {"on": on_off["1"]["faults_per_step"],
                               "off": on_off["0"]["faults_per_step"]}}
  res["opt"] = {"rows": out}


def worker_opt_malloc(cfg) -> dict:
  """Step ms and page faults per step of a multi-run step, in this process."""
  import resource  # pylint: disable=g-import-not-at-top
  s = JaxSetup(encoder="mlp", width=cfg["mlp_width"], depth=cfg["mlp_depth"],
               image_shape=cfg["mlp_in"], tasks=cfg["tasks"],
               batch=cfg["mlp_batch"], seeds=tuple(range(cfg["opt_mlp_runs"])),
               run_map="unroll")
  run = s.runner()
  timed = interleaved({"step": run}, rounds=cfg["opt_rounds"],
                      target_s=cfg["target_s"])
  n = max(1, timed["step"]["iters"])
  f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  run(n)
  faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n
  return {"step_ms": timed["step"]["median_s"] * 1e3, "faults_per_step": faults}


# --------------------------------------------------------------------------
# Subprocess workers.


def _run_worker(name, cfg, extra=(), env=None) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", name]
  if cfg is SMOKE:
    cmd.append("--smoke")
  cmd += ["--worker-args", *extra]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                        text=True)
  if proc.returncode != 0:
    raise RuntimeError(f"worker {name} failed:\n{proc.stderr[-2000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _worker_main(args, cfg) -> None:
  a = args.worker_args
  if args.worker == "b5":
    out = worker_b5(cfg)
  elif args.worker == "b7-jax":
    out = worker_b7_jax(cfg, a[0])
  elif args.worker == "b7-torch":
    out = worker_b7_torch(cfg, a[0], int(a[1]), int(a[2]))
  elif args.worker == "opt-malloc":
    out = worker_opt_malloc(cfg)
  else:
    raise SystemExit(f"unknown worker {args.worker!r}")
  print(json.dumps(out))


# --------------------------------------------------------------------------
# Report.


def _fmt(x, spec=".2f"):
  if x is None:
    return "-"
  if isinstance(x, float) and math.isnan(x):
    return "nan"
  return format(x, spec)


def table(res) -> str:
  """The results as a plain-text (markdown) table, one block per section."""
  lines = []
  add = lines.append
  if "b1" in res:
    b = res["b1"]
    add(f"B1 step throughput — {b['model']}")
    add("| variant | step ms | examples/s | GFLOP/s | note |")
    add("|---|---:|---:|---:|---|")
    for name, r in b["rows"].items():
      add(f"| {name} | {_fmt(r.get('step_ms'))} | "
          f"{_fmt(r.get('examples_per_s'), '.0f')} | "
          f"{_fmt(r.get('gflops_per_s'), '.0f')} | {r.get('note', '')} |")
    add(f"mtljax / best PyTorch: {_fmt(b['ratio_vs_best_torch'])} "
        f"(goal {b['goal']})")
    add("")
  if "b2" in res:
    b = res["b2"]
    add("B2 hardware efficiency (f32)")
    for name, p in b["peak_matmul"].items():
      add(f"  peak {name} {p['n']}^3: {p['gflops_per_s']:.0f} GFLOP/s")
    add("| variant | GFLOP/s | efficiency |")
    add("|---|---:|---:|")
    for name, r in b["rows"].items():
      add(f"| {name} | {r['gflops_per_s']:.0f} | {r['efficiency']:.1%} |")
    add("  the dots of mtljax's compiled b1 step, each timed on its own (XLA):")
    for r in b["step_matmuls"]:
      add(f"    {r['dot']:58s} {r['ms']:7.3f} ms {r['gflops_per_s']:6.0f} GFLOP/s")
    add(f"  sum of matmuls {b['sum_of_matmuls_ms']:.2f} ms vs mtljax step "
        f"{b['rows']['mtljax']['step_ms']:.2f} ms; efficiency "
        f"{b['efficiency']:.1%} (goal {b['goal']})")
    add(f"  floor: matmuls at peak + Adam at {b['stream_gb_per_s']:.0f} GB/s "
        f"({b['adam_floor_ms']:.2f} ms) = {b['step_floor_ms']:.2f} ms, i.e. "
        f"efficiency <= {b['efficiency_bound']:.1%} on this machine")
    add("")
  if "b2b" in res:
    b = res["b2b"]
    add("B2b bf16 compute")
    add("| variant | step ms | examples/s | note |")
    add("|---|---:|---:|---|")
    for name, r in b["rows"].items():
      add(f"| {name} | {_fmt(r.get('step_ms'))} | "
          f"{_fmt(r.get('examples_per_s'), '.0f')} | {r.get('note', '')} |")
    add(f"mtljax bf16 / f32: {_fmt(b['bf16_speedup_over_f32'])}; mtljax bf16 / "
        f"best PyTorch bf16: {_fmt(b['ratio_vs_best_torch_bf16'])}")
    add(f"  bf16 matmul {FULL['peak_n'] if not res['smoke'] else SMOKE['peak_n']}"
        "^3: " + "; ".join(f"{k} {v:.0f} GFLOP/s" for k, v in
                          b.get("peak_bf16_matmul_gflops_per_s", {}).items()))
    add("  b1's weight-gradient dot x^T g: " + "; ".join(
        f"{k} {v:.2f} ms" for k, v in b.get("wgrad_dot_ms", {}).items()))
    add("")
  if "b3" in res:
    b = res["b3"]
    add("B3 runs per compile (speed-up = R one-run dispatches / one R-run step)")
    add("| model | R | sequential ms | vmap ms (x) | unroll ms (x) | "
        "scan ms (x) | best/R | 1 dispatch ms (share) |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|")
    for model, m in b["models"].items():
      for r, p in m["by_R"].items():
        cells = " | ".join(f"{p[k]['ms']:.2f} ({p[k]['speedup']:.2f})"
                           for k in ("vmap", "unroll", "scan"))
        add(f"| {model} w{m['width']} | {r} | {p['sequential_ms']:.2f} | "
            f"{cells} | {p['best_speedup_over_R']:.2f} | "
            f"{p['dispatch_ms']:.3f} ({p['dispatch_share']:.0%}) |")
    for model, sw in b["width_sweep"].items():
      first = next(iter(sw["by_width"].values()))
      add(f"  {model} width sweep, R={first['R']} ({first['map']}): width: "
          f"speed-up, one run's GFLOP/s")
      add("    " + "; ".join(
          f"w{w}: {v['speedup']:.2f}x (dispatch {v['dispatch_share']:.0%}), "
          f"{v['run_gflops_per_s']:.0f}"
          for w, v in sw["by_width"].items()))
      add(f"    compute-bound (one run at >= half the best rate) from width "
          f"{sw['compute_bound_width']}")
    add("")
  if "opt" in res:
    add("Optimizations, each switched off vs on (step ms, median)")
    add("| optimization | program | off ms | on ms | speed-up |")
    add("|---|---|---:|---:|---:|")
    for name, r in res["opt"]["rows"].items():
      faults = r.get("page_faults_per_step")
      note = (f" (page faults/step: {faults['off']:.0f} off, "
              f"{faults['on']:.0f} on)" if faults else "")
      label = name if name.startswith("host") else f"custom {name}"
      add(f"| {label} | {r['program']}{note} | {r['off_ms']:.2f} | "
          f"{r['on_ms']:.2f} | {r['speedup']:.2f} |")
    add("")
  if "b4" in res:
    b = res["b4"]
    add(f"B4 input pipeline — {b['program']}")
    for name, r in b["rows"].items():
      add(f"  {name:26s} {r['steps_per_s']:8.1f} steps/s")
    add(f"  overhead {b['overhead']:+.1%} (goal {b['goal']}); host batch "
        f"{b['host_batch_ms']:.2f} ms")
    add("")
  if "b5" in res:
    b = res["b5"]
    dp, bf = b["data_parallel"], b["bf16"]
    add(f"B5 data-parallel {dp['devices'][0]} vs {dp['devices'][1]} devices: "
        f"max |Δparam| {dp['max_abs_param_diff']:.1e} "
        f"({'agree' if dp['agree'] else 'DISAGREE'}); bf16 vs f32 loss "
        f"rel. diff {bf['max_rel_loss_diff_vs_f32']:.1e} "
        f"({'agree' if bf['agree'] else 'DISAGREE'}); MFU: "
        f"{_fmt(b['mfu'], '.1%') if b['mfu'] is not None else b['mfu_note']}")
    add("")
  if "b6" in res:
    b = res["b6"]
    add(f"B6 compile time — {b['config']}")
    for name, r in b["rows"].items():
      add(f"  {name:34s} trace+lower {r['lower_s']:.2f} s, "
          f"compile {r['compile_s']:.2f} s")
    if "reproduce" in b:
      add(f"  python -m mtljax reproduce: {b['reproduce']['wall_s']:.0f} s "
          f"(exit {b['reproduce']['returncode']})")
    add("")
  if "b7" in res:
    b = res["b7"]
    m = b["mtljax"]
    add(f"B7 study end to end — {b['study']} ({b['data']} data)")
    add(f"  mtljax, one process:            {b['mtljax_one_process_s']:.1f} s "
        f"({m['runs']} runs, run map {m['run_map']}; data, init, compile and "
        f"first step {m['setup_and_first_step_s']:.1f} s, other steps "
        f"{m['other_steps_s']:.1f} s, the rest is Python start-up)")
    if "torch_process_per_run_s" in b:
      scaled = ("" if b["torch_runs_timed"] == b["torch_runs"] else
                f", {b['torch_runs_timed']} of them timed and scaled up")
      add(f"  PyTorch, one process per run:   {b['torch_process_per_run_s']:.1f}"
          f" s ({b['torch_runs']} processes{scaled}; median "
          f"{b['torch_median_process_s']:.2f} s each)")
      add(f"  speed-up {b['speedup']:.1f}x (goal {b['goal']})")
    else:
      add(f"  PyTorch: {b['torch_note']}")
    add("")
  for name, e in res.get("errors", {}).items():
    add(f"{name.upper()} FAILED: {e}")
  return "\n".join(lines)


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
      fn = globals()[f"section_{name}"]
      if name in ("b4", "b6", "b7"):
        fn(cfg, res, args)
      else:
        fn(cfg, res)
    except Exception as e:  # pylint: disable=broad-except
      # One failing section must not lose the others' results.
      traceback.print_exc()
      res["errors"][name] = _err(e)
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
