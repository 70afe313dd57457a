"""B1, B2, B2b: the reference MLP vs PyTorch and the matmul peak."""

from __future__ import annotations

import math
import re

from benchlib.common import (
    CACHE, err_text, fake_batch, FULL, get_torch, interleaved, JaxSetup,
    NO_TORCH, plain_jax_mlp_runner, torch_mlp, torch_step_runner)


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
  torch = get_torch()
  in_features = math.prod(cfg["mlp_in"])
  w, d, t, bsz = cfg["mlp_width"], cfg["mlp_depth"], cfg["tasks"], cfg["mlp_batch"]
  mtl = JaxSetup(encoder="mlp", width=w, depth=d, image_shape=cfg["mlp_in"],
                 tasks=t, batch=bsz)
  info = mtl.compile_seconds()
  CACHE["b1_hlo"] = mtl.hlo_text
  import jax  # pylint: disable=g-import-not-at-top
  n_params = sum(x.size for x in jax.tree.leaves(mtl.state.params))
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
      notes["torch.compile"] = "failed: " + err_text(e)
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
  torch = get_torch()
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
  dots = time_dots(hlo_dots(CACHE["b1_hlo"]), cfg)
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
  torch = get_torch()
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
  torch = get_torch()
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
        notes[name] = "failed: " + err_text(e)
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
