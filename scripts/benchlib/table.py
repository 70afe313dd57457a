"""The plain-text (markdown) table that bench.py prints."""

from __future__ import annotations

import math

from benchlib.common import FULL, SMOKE


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
    add("mtljax's choices, each against the step without it (ms, median; "
        "speed-up = without / with)")
    add("| choice | program | without ms | with ms | speed-up |")
    add("|---|---|---:|---:|---:|")
    for name, r in res["opt"]["rows"].items():
      faults = r.get("page_faults_per_step")
      note = (f" (page faults/step: {faults['off']:.0f} without, "
              f"{faults['on']:.0f} with)" if faults else "")
      add(f"| {name} | {r['program']}{note} | {r['off_ms']:.2f} | "
          f"{r['on_ms']:.2f} | {r['speedup']:.2f} |")
    add("")
  if "layers" in res:
    b = res["layers"]
    add(f"Layers — one run-step of the {b['program']}, piece by piece (ms, "
        "median, each jitted alone)")
    add("| stage | forward | weight grad | input grad | ReLU + pool, fwd+bwd |")
    add("|---|---:|---:|---:|---:|")
    for name, r in b["rows"].items():
      add(f"| {name} | {r['fwd_ms']:.2f} | {r['dw_ms']:.2f} | "
          f"{r['dx_ms']:.2f} | {r['relu_pool_ms']:.2f} |")
    f = b["first_layer_fused"]
    add(f"  sum of the pieces {b['sum_of_pieces_ms']:.2f} ms; the first layer "
        f"fused over {f['runs']} runs: forward {f['fwd_ms_per_run']:.2f}, "
        f"weight grad {f['dw_ms_per_run']:.2f} ms per run")
    add("  run-step: " + "; ".join(f"{k} {v:.2f} ms"
                                   for k, v in b["run_step_ms"].items()))
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
  if "b8" in res:
    b = res["b8"]
    shape = "x".join(str(s) for s in b["image_shape"])
    ev = b["eval_examples"]
    add(f"B8 input pipeline memory — {b['num_examples']} x {shape} "
        f"({b['dataset']}; in_memory={b['in_memory']}, streaming "
        f"{b['streaming']})")
    add(f"  peak RSS {b['peak_rss_mb']:.0f} MiB "
        f"({'under' if b['under_4gb'] else 'NOT under'} 4 GB); the old "
        f"in-memory path: {b['in_memory_equivalent_gb']:.2f} GB "
        f"({b['in_memory_equivalent_full_res_gb']:.1f} GB at celeb_a's "
        "218x178)")
    add("  RSS MiB (current / peak) after: " + "; ".join(
        f"{k} {b['rss_mb'][k]:.0f} / {b['peak_rss_mb_by_phase'][k]:.0f}"
        for k in b["rss_mb"]))
    add(f"  label scan {b['label_scan_s']:.1f} s; {b['seeds']} seeds x "
        f"{b['global_batch_size']}: {b['batches_per_s']:.2f} batches/s "
        f"({b['records_per_s']:.0f} records/s, {b['batches']} batches)")
    add(f"  eval: validation {ev['validation']} + test {ev['test']} opened in "
        f"{b['eval_open_s']:.1f} s; one validation pass in chunks of "
        f"{b['eval_chunk']}: {b['eval_pass_s']:.2f} s (held as uint8: "
        f"{b['eval_held_in_memory']}), {b['eval_pass_streamed_s']:.1f} s "
        "streamed")
    add("")
  if "methods" in res:
    b = res["methods"]
    add(f"methods: each MTL method's step against EW's, interleaved — "
        f"{b['program']}")
    add("  x EW: median over rounds of the row's time / EW's in the same "
        "round; EW (again): EW's step timed twice per round (noise floor); "
        "vs params: the same per round against the aggregator on parameter "
        "gradients; compile s: trace + XLA compile")
    for cell_name, c in b["cells"].items():
      if "error" in c:
        add(f"  {cell_name} FAILED: {c['error']}")
        continue
      la = c["load_average"]
      add(f"  {cell_name} — {c['encoder'].upper()} width {c['width']} depth "
          f"{c['depth']}, run map {c['run_map']}; load average "
          f"{la[0][0] if la[0] else '-'} -> {la[1][0] if la[1] else '-'}; "
          f"compile {c['compile_wall_s']:.0f} s "
          f"({c['compile_threads']} at a time), timing "
          f"{c['timing_wall_s']:.0f} s")
      add("| method | kind | step ms | x EW | vs params | compile s | goal "
          "| met |")
      add("|---|---|---:|---:|---:|---:|---|---|")
      for name, r in c["rows"].items():
        if "error" in r:
          add(f"| {name} | {r['kind']} | - | - | - | - | {r['goal']} | "
              f"FAILED: {r['error']} |")
          continue
        comp = (r["lower_s"] + r["compile_s"]) if "compile_s" in r else None
        met = {None: "", True: "met", False: "NOT MET"}[r["met"]]
        add(f"| {name} | {r['kind']} | {_fmt(r['step_ms'])} | "
            f"{_fmt(r['ratio'])} | {_fmt(r.get('vs_params'))} | "
            f"{_fmt(comp, '.1f')} | {r['goal']} | {met} |")
    add(f"  goals met {b['met']}, not met {b['not_met']}"
        + (f"; failed: {', '.join(b['failed'])}" if b["failed"] else "")
        + f"; {b['wall_s']:.0f} s")
    add("")
  for name, e in res.get("errors", {}).items():
    add(f"{name.upper()} FAILED: {e}")
  return "\n".join(lines)
