"""methods: every MTL method's step time against equal weighting (EW).

For each (encoder, T) cell, every variant's step is built and compiled once,
then all of them are timed together, round-robin (common.interleaved), so
that EW is re-measured in every round beside the method rows. A row's ratio
is the median over rounds of (its time in round r) / (EW's time in round r):
both numbers of a pair saw the same load, which a ratio of two medians does
not guarantee. "EW (again)" is EW's own step timed as a second variant half a
round away from the first: its ratio is the noise floor of the others.

Rows and goals (T tasks):
  * loss weightings (one backward pass of sum_t w_t loss_t): <= 1.05x EW;
  * aggregators on parameter gradients (T backward passes): <= (1 + 0.3 T)x;
  * aggregators with rep_grad (T backward passes through the heads only):
    faster than the same aggregator on parameter gradients. mgda_ub is MGDA
    on representation gradients by definition, so its counterpart is mgda;
    mean and sum are left out here: for a linear aggregator rep_grad is EW's
    gradient exactly (docs/METHODS.md), not a method of its own.
"""

from __future__ import annotations

import sys
import time

from benchlib.common import (
    _cpu_model, err_text, interleaved, JaxSetup, load_average, median_of)

EW = "EW"
EW_AGAIN = "EW (again)"
WEIGHTING_GOAL = 1.05
AGGREGATOR_GOAL_PER_TASK = 0.3  # goal: <= 1 + 0.3 T
# Aggregators that always take representation gradients, and the one on
# parameter gradients that their rep_grad goal compares with.
_PARAM_TWIN = {"mgda_ub": "mgda"}


def _variants(select) -> dict:
  """{row name: (kind, config.method fields, rep counterpart row or None)}."""
  from mtljax import registry  # pylint: disable=g-import-not-at-top
  select = select or {}

  def pick(kind, names):
    chosen = select.get(kind)
    return [n for n in names if chosen is None or n in chosen]

  def representation(name):
    return bool(getattr(registry.AGGREGATORS.get(name), "representation",
                        False))

  out = {}
  for w in pick("weightings", [n for n in registry.WEIGHTINGS.names()
                               if n != "static"]):  # static: EW itself
    out[w] = ("weighting", {"weighting": w}, None)
  aggs = registry.AGGREGATORS.names()
  for a in pick("aggregators", [n for n in aggs if not representation(n)]):
    out[a] = ("aggregator", {"aggregator": a}, None)
  for a in pick("rep_grad", [n for n in aggs if n not in ("mean", "sum")]):
    if representation(a):
      # Always on representation gradients (mgda_ub: MGDA's, by definition).
      out[a] = ("rep_grad", {"aggregator": a}, _PARAM_TWIN.get(a))
    else:
      out[f"{a} rep"] = ("rep_grad", {"aggregator": a, "rep_grad": True}, a)
  return out


def _lower(setup):
  """(lowered step, lower_s): tracing, in the main thread."""
  t0 = time.perf_counter()
  lowered = setup.step.lower(setup.state, setup.specs, setup.batch)
  return lowered, time.perf_counter() - t0


def _compile(setup, lowered) -> float:
  """Compiles a lowered step into `setup` (thread-safe); its compile_s."""
  t0 = time.perf_counter()
  # The timed rounds run this executable: jit's own cache would compile
  # the step a second time on its first call.
  setup.step = lowered.compile()
  return time.perf_counter() - t0


def _cell(cfg, encoder, width, depth, tasks, variants) -> dict:
  """One (encoder, T) cell: build and compile every variant, time them all."""
  from concurrent import futures  # pylint: disable=g-import-not-at-top
  from mtljax import config as config_lib  # pylint: disable=g-import-not-at-top
  from mtljax import models  # pylint: disable=g-import-not-at-top
  from mtljax.core import state as state_lib  # pylint: disable=g-import-not-at-top
  from mtljax.core.run_map import default_run_map  # pylint: disable=g-import-not-at-top
  common = dict(encoder=encoder, width=width, depth=depth,
                image_shape=cfg["methods_image"], tasks=tasks,
                batch=cfg["methods_batch"], seeds=(0,), modes=("mtl",),
                normalize="per_task",
                run_map=default_run_map(models.is_convolutional(encoder)))
  rows, setups, jobs = {}, {}, {}
  t0 = time.perf_counter()
  # Every variant starts from the same weights: initialise (and compile the
  # initialisation) once per cell.
  model_cfg = config_lib.default_config().model
  model_cfg.encoder, model_cfg.width, model_cfg.depth = encoder, width, depth
  common["init"] = state_lib.init_params(model_cfg, cfg["methods_image"],
                                         tasks, [0], 1)
  # XLA's compiles take most of this section's time (seconds each, even at
  # smoke sizes; one core each, the GIL released). Worker threads compile
  # while the main thread traces the next variant (tracing stays in one
  # thread). A row's compile_s is its compile's wall time: with more than
  # one thread, beside another compile (recorded as compile_threads).
  threads = cfg.get("methods_compile_threads") or 1
  with futures.ThreadPoolExecutor(max_workers=threads) as pool:
    for name, (kind, method, counterpart) in [(EW, ("ew", None, None))] + list(
        variants.items()):
      row = rows[name] = {"kind": kind, "method": method}
      if counterpart:
        row["counterpart"] = counterpart
      try:
        s = JaxSetup(method=method, **common)
        lowered, row["lower_s"] = _lower(s)
      except Exception as e:  # pylint: disable=broad-except
        # One method that fails to build must not lose the other rows.
        row["error"] = err_text(e)
        continue
      setups[name] = s
      jobs[name] = pool.submit(_compile, s, lowered)
    for name, job in jobs.items():
      try:
        rows[name]["compile_s"] = job.result()
      except Exception as e:  # pylint: disable=broad-except
        rows[name]["error"] = err_text(e)
        del setups[name]
  fns = {name: s.runner() for name, s in setups.items()}
  if EW in fns:
    # EW's own step, a second time in each round (the noise floor); its
    # compile time is EW's.
    fns[EW_AGAIN] = setups[EW].runner()
    rows = {EW: rows[EW], EW_AGAIN: {"kind": "ew", "method": None},
            **{n: r for n, r in rows.items() if n != EW}}
  compile_wall = time.perf_counter() - t0
  if EW not in fns:
    raise RuntimeError(f"EW step failed: {rows[EW].get('error')}")
  # EW first, its second copy half a round later: interleaved rotates the
  # order, so the two stay apart and no variant is always first.
  names = [n for n in rows if n in fns and n not in (EW, EW_AGAIN)]
  half = len(names) // 2
  order = [EW] + names[:half] + [EW_AGAIN] + names[half:]
  load_before = load_average()
  t1 = time.perf_counter()
  timed = interleaved({n: fns[n] for n in order},
                      rounds=cfg["methods_rounds"],
                      target_s=cfg["methods_target_s"])
  time_wall = time.perf_counter() - t1
  ew = timed[EW]["round_s"]
  for name, tm in timed.items():
    row = rows[name]
    row.update(step_ms=tm["median_s"] * 1e3, min_ms=tm["min_s"] * 1e3,
               iters=tm["iters"], rounds=tm["rounds"],
               ratio=median_of([a / b for a, b in zip(tm["round_s"], ew)]))
  for name in rows:
    _judge(name, rows, timed, tasks)
  print(f"[bench] methods {encoder} T={tasks}: {len(fns)} steps, compile "
        f"{compile_wall:.0f} s, timing {time_wall:.0f} s",
        file=sys.stderr, flush=True)
  return {"encoder": encoder, "width": width, "depth": depth, "tasks": tasks,
          "run_map": common["run_map"], "rows": rows,
          "compile_wall_s": compile_wall, "timing_wall_s": time_wall,
          "compile_threads": threads,
          "load_average": [load_before, load_average()]}


def _judge(name, rows, timed, tasks) -> None:
  """Adds the row's goal and whether it is met (None: nothing to judge)."""
  row = rows[name]
  kind = row["kind"]
  row["met"] = None
  if kind == "ew":
    row["goal"] = "-"
    return
  if kind == "weighting":
    bound = WEIGHTING_GOAL
    row["goal"] = f"<= {bound:.2f}x EW"
  elif kind == "aggregator":
    bound = 1.0 + AGGREGATOR_GOAL_PER_TASK * tasks
    row["goal"] = f"<= {bound:.1f}x EW"
  else:
    other = row.get("counterpart")
    row["goal"] = f"< {other} (params)" if other else "-"
    bound = None
  if "ratio" not in row:
    return  # failed to build: neither met nor not met
  if bound is not None:
    row["met"] = bool(row["ratio"] <= bound)
    return
  if other not in timed:
    return  # the counterpart is not in this run (or failed)
  # Paired like the EW ratio: round by round, the same load on both.
  row["vs_params"] = median_of([
      a / b for a, b in zip(timed[name]["round_s"],
                            timed[other]["round_s"])])
  row["met"] = bool(row["vs_params"] < 1.0)


def section_methods(cfg, res):
  """Every method's step time against EW's, per (encoder, T) cell.

  Args:
    cfg: FULL or SMOKE (common.py): the methods_* sizes, the cells, rounds,
      and methods_select (None: every registered method; else
      {"weightings", "aggregators", "rep_grad": names}).
    res: the results; gets res["methods"].
  """
  variants = _variants(cfg["methods_select"])
  t_all = time.perf_counter()
  cells = {}
  for encoder, tasks in cfg["methods_cells"]:
    width, depth = cfg["methods_models"][encoder]
    key = f"{encoder} T={tasks}"
    try:
      cells[key] = _cell(cfg, encoder, width, depth, tasks, variants)
    except Exception as e:  # pylint: disable=broad-except
      # A long section: one failing cell must not lose the others.
      cells[key] = {"encoder": encoder, "tasks": tasks, "error": err_text(e),
                    "rows": {}}
  judged = [r["met"] for c in cells.values() for r in c["rows"].values()
            if r["met"] is not None]
  failed = sorted({f"{n} ({k})" for k, c in cells.items()
                   for n, r in c["rows"].items() if "error" in r}
                  | {f"cell {k}" for k, c in cells.items() if "error" in c})
  models_ = ", ".join(f"{e.upper()} width {w} depth {d}"
                      for e, (w, d) in cfg["methods_models"].items())
  image = "x".join(str(x) for x in cfg["methods_image"])
  res["methods"] = {
      "program": f"one MTL run, binary tasks, batch {cfg['methods_batch']} of "
                 f"{image}, loss.normalize per_task; {models_}",
      "tasks": sorted({t for _, t in cfg["methods_cells"]}),
      "batch": cfg["methods_batch"],
      "rounds": cfg["methods_rounds"], "target_s": cfg["methods_target_s"],
      "cells": cells,
      "goals": {"weighting": f"<= {WEIGHTING_GOAL}x EW",
                "aggregator": f"<= (1 + {AGGREGATOR_GOAL_PER_TASK} T)x EW",
                "rep_grad": "below the same aggregator on parameter "
                            "gradients"},
      "met": sum(judged), "not_met": len(judged) - sum(judged),
      "failed": failed, "cpu": _cpu_model(),
      "wall_s": time.perf_counter() - t_all}
