"""Sizes, timing, environment, and the mtljax and PyTorch steps to time."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
if REPO not in sys.path:  # mtljax, when benchlib is imported on its own
  sys.path.insert(0, REPO)
from mtljax.run import host  # noqa: E402  pylint: disable=wrong-import-position

BENCH_SCRIPT = os.path.join(REPO, "scripts", "bench.py")  # workers run it

SECTIONS = ("b1", "b2", "b2b", "b3", "b4", "b5", "b6", "b7", "b8", "opt",
            "layers", "methods")

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
    opt_mlp_runs=2, opt_cnn_runs=4, opt_rounds=5, opt_study_seeds=4, layer_rounds=30,
    opt_study_batch=32,
    # b8: a celeb_a-sized mock (64x64x3), 3 seeds x 256, streamed.
    b8_train=162770, b8_eval=(19867, 19962), b8_batch=256, b8_batches=50,
    b8_warmup=5, b8_chunk=1024, b8_in_memory="auto",
    # methods: every MTL method's step against EW's, one MTL run. E7's
    # network and batch (CNN width 8, depth 3, batch 32, loss.normalize
    # "per_task"); an MLP of width 64 beside it.
    methods_models={"cnn": (8, 3), "mlp": (64, 3)},  # encoder: (width, depth)
    methods_image=(32, 32, 3), methods_batch=32,
    methods_cells=(("cnn", 4), ("cnn", 10), ("mlp", 4), ("mlp", 10)),
    methods_rounds=5, methods_target_s=0.15,
    methods_select=None,  # None: every registered method
    # 4 cells x 32 steps of seconds of XLA compile each, one core per
    # compile: two at a time on 2 free cores about halve the section's
    # largest part (1: each row's compile time alone, and a longer run).
    methods_compile_threads=2,
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
    opt_mlp_runs=2, opt_cnn_runs=2, opt_rounds=2, opt_study_seeds=2, layer_rounds=2,
    opt_study_batch=8,
    b8_train=2000, b8_eval=(300, 300), b8_batch=64, b8_batches=4,
    b8_warmup=1, b8_chunk=128, b8_in_memory="never",
    methods_models={"cnn": (2, 2), "mlp": (8, 2)},
    methods_image=(8, 8, 3), methods_batch=8,
    methods_cells=(("mlp", 2),),  # compiles dominate: one cell (CI's budget)
    methods_rounds=2, methods_target_s=0.01,
    # One path of each kind: a weighting (with an after-step hook), an
    # aggregator on parameter and on representation gradients.
    methods_select={"weightings": ("famo",), "aggregators": ("pcgrad",),
                    "rep_grad": ("pcgrad",)},
    methods_compile_threads=1,
)


# --------------------------------------------------------------------------
# Timing and environment helpers.


def median_of(xs):
  return float(statistics.median(xs)) if xs else float("nan")


def interleaved(fns: dict, *, rounds: int, target_s: float) -> dict:
  """Round-robin timing of several variants.

  Args:
    fns: {name: run(n)}; `run(n)` performs n iterations and returns once they
      are finished (blocks on the device).
    rounds: timed rounds per variant.
    target_s: wall time one round of one variant aims for.

  Returns:
    {name: {"median_s", "min_s", "iters", "rounds", "round_s"}}, seconds
    per iteration; round_s[r] is round r's (variants compared round by round
    saw the same load).
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
  return {name: {"median_s": median_of(ts), "min_s": min(ts),
                 "iters": iters[name], "rounds": len(ts), "round_s": ts}
          for name, ts in times.items()}


def load_average() -> list[float] | None:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


# Shared with the results' env record (mtljax/run/host.py).
_cpu_model = host.cpu_model
cpu_features = host.cpu_features


def get_torch():
  """The torch module, or None when the `bench` extra is not installed."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    return torch
  except ImportError:
    return None


CACHE = {}  # across sections, not written out (e.g. b1's compiled HLO)

NO_TORCH = "torch not installed (pip install -e '.[bench]')"


def err_text(e: BaseException) -> str:
  lines = [l for l in str(e).strip().splitlines() if l.strip()]
  msg = lines[0] if lines else ""
  return f"{type(e).__name__}: {msg}"[:300]


def environment() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  torch = get_torch()
  return {
      "cpu": _cpu_model(), "cpu_features": cpu_features(),
      "nproc": os.cpu_count(),
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

  Args (beyond the model's sizes):
    normalize: loss.normalize of the step ("per_example": the classic
      bench step).
    method: None (the classic step), or config.method fields, e.g.
      {"aggregator": "pcgrad", "rep_grad": True}; the step is then the one
      of the program that the method applies to (its multi-task groups).
    init: (graphdef, params, model_state) of state_lib.init_params for the
      same model, tasks, seeds and groups, to skip its compile when many
      steps of one model are built; copied (the step donates its state).
    fuse_stem: the fused first CNN stage (core/stem.py); None: as training
      does by default (on wherever stem.fusable and run_map is "scan").
    arch, arch_kwargs: config.model.arch and its kwargs (e.g. "share_k",
      {"shared_stages": 1}).

  Attributes:
    step, state, specs, batch, mesh, graphdef, tx, num_runs, prog.
  """

  def __init__(self, *, encoder, width, depth, image_shape, tasks, batch,
               seeds=(0,), modes=("mtl",), dtype="float32", run_map="vmap",
               donate=True, num_devices=None, lrs=(1e-3,),
               normalize="per_example", method=None, init=None,
               fuse_stem=None, arch="hps", arch_kwargs=None):
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from mtljax import config as config_lib  # pylint: disable=g-import-not-at-top
    from mtljax.core import parallel, runs  # pylint: disable=g-import-not-at-top
    from mtljax.core import state as state_lib  # pylint: disable=g-import-not-at-top
    from mtljax.core import step as step_lib  # pylint: disable=g-import-not-at-top
    cfg = config_lib.default_config()
    cfg.model.encoder, cfg.model.width, cfg.model.depth = encoder, width, depth
    cfg.model.dtype = dtype
    cfg.model.arch = arch
    if arch_kwargs:
      cfg.model.arch_kwargs = dict(arch_kwargs)
    cfg.modes, cfg.optimizer.learning_rates = tuple(modes), tuple(lrs)
    cfg.loss.normalize = normalize
    if method:
      for key, value in method.items():
        cfg.method[key] = value
      # Unknown names and hyperparameters fail here, with the config's
      # own message, not deep inside the step's tracing.
      cfg = config_lib.validate(cfg)
    progs = runs.build_programs(cfg, image_shape, tasks)
    # With a method, single-task groups keep the classic step in a program
    # of their own; the method's program is the one to time.
    prog = (next((p for p in progs if p.uses_method), None) if method
            else progs[0])
    if prog is None:
      raise ValueError(f"method {method!r} is not active (static weighting, "
                       "no aggregator): it is the classic step, method=None")
    spec = prog.method if method else None
    self.prog = prog
    self.tx = step_lib.make_optimizer(cfg.optimizer, 1000)
    if init is None:
      self.graphdef, params, model_state = state_lib.init_params(
          cfg.model, image_shape, tasks, list(seeds), prog.num_groups)
    else:
      self.graphdef = init[0]
      params, model_state = jax.tree.map(jnp.copy, tuple(init[1:]))
    self.mesh = parallel.make_mesh(num_devices)
    rep = parallel.replicated(self.mesh)
    self.state = jax.device_put(
        state_lib.init_state(params, model_state, self.tx, spec, tasks),
        rep)
    self.specs = jax.device_put(prog.specs(list(seeds)), rep)
    self.batch = parallel.global_batch(
        fake_batch(0, len(seeds), batch, image_shape, tasks), self.mesh)
    from mtljax.core import stem  # pylint: disable=g-import-not-at-top
    if fuse_stem is None:
      fuse_stem = cfg.train.fuse_stem
    self.step = step_lib.make_train_step(
        self.graphdef, self.tx, normalize=normalize, mesh=self.mesh,
        donate=donate, run_map=run_map, method=spec,
        fuse_stem=fuse_stem and stem.fusable(cfg.model))
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


def torch_adam(torch, params):
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
  opt = torch_adam(torch, net.parameters())
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
# Subprocess workers.


def run_worker(name, cfg, extra=(), env=None) -> dict:
  cmd = [sys.executable, BENCH_SCRIPT, "--worker", name]
  if cfg is SMOKE:
    cmd.append("--smoke")
  cmd += ["--worker-args", *extra]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                        text=True)
  if proc.returncode != 0:
    raise RuntimeError(f"worker {name} failed:\n{proc.stderr[-2000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_data_dir(args) -> str:
  return args.data_dir or os.path.join(tempfile.gettempdir(),
                                       "mtljax_bench_data")
