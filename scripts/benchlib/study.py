"""B7 (a study end to end vs a PyTorch process per run); opt ablations."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time

from benchlib.common import (
    bench_data_dir, fake_batch, get_torch, interleaved, JaxSetup, median_of,
    NO_TORCH, run_worker, torch_adam, torch_cnn)


# --------------------------------------------------------------------------
# B7: a study end to end.


def _b7_data(cfg, args, path):
  """Writes the study's training data (images, labels, masks) to an .npz."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtljax import data as data_lib  # pylint: disable=g-import-not-at-top
  try:
    d = data_lib.load_split("mtl_scenes", "train", bench_data_dir(args),
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
  from mtljax.core import parallel  # pylint: disable=g-import-not-at-top
  from mtljax import models  # pylint: disable=g-import-not-at-top
  from mtljax.core.run_map import default_run_map  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  run_map = default_run_map(models.is_convolutional("cnn"))
  d = np.load(data_path)
  images, labels, mask = d["image"], d["labels"], d["mask"]
  seeds = tuple(range(cfg["b7_seeds"]))
  steps, bsz = cfg["b7_steps"], cfg["b7_batch"]
  s = JaxSetup(encoder="cnn", width=cfg["b7_width"], depth=cfg["cnn_depth"],
               image_shape=images.shape[1:], tasks=labels.shape[1], batch=bsz,
               seeds=seeds, modes=("mtl", "stl"),
               run_map=run_map)
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
  return {"runs": s.num_runs, "run_map": run_map,
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
  opt = torch_adam(torch, net.parameters())
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
  torch = get_torch()
  work = tempfile.mkdtemp(prefix="mtljax_bench_b7_")
  try:
    path = os.path.join(work, "train.npz")
    source = _b7_data(cfg, args, path)
    t0 = time.perf_counter()
    jax_out = run_worker("b7-jax", cfg, extra=[path])
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
          run_worker("b7-torch", cfg, extra=[path, str(seed), str(task)],
                      env=dict(os.environ, MTLJAX_MALLOC_TUNING="0"))
          per_run.append(time.perf_counter() - t1)
      torch_s = sum(per_run) * cfg["b7_seeds"] / timed_seeds
      out.update({"torch_process_per_run_s": torch_s,
                  "torch_runs": cfg["b7_seeds"] * len(cfg["b7_torch_tasks"]),
                  "torch_runs_timed": len(per_run),
                  "torch_median_process_s": median_of(per_run),
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


def _im2col_conv(jax, jnp):
  """A stride-1 SAME convolution as im2col + one matmul (an alternative)."""
  def conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
           rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
           precision=None, preferred_element_type=None, **kw):
    del window_strides, padding, lhs_dilation, rhs_dilation  # 1, SAME, 1, 1
    del dimension_numbers, feature_group_count, precision, kw  # NHWC, HWIO
    kh, kw_, c, o = rhs.shape
    b, h, w, _ = lhs.shape
    xp = jnp.pad(lhs, ((0, 0), ((kh - 1) // 2, kh // 2),
                       ((kw_ - 1) // 2, kw_ // 2), (0, 0)))
    cols = jnp.concatenate([xp[:, i:i + h, j:j + w, :]
                            for i in range(kh) for j in range(kw_)], axis=-1)
    return jax.lax.dot_general(cols, rhs.reshape(kh * kw_ * c, o),
                               (((3,), (0,)), ((), ())),
                               preferred_element_type=preferred_element_type)
  return conv


def _first_layer_im2col(jax, jnp):
  """im2col for thin convolutions only (the first layer), Eigen elsewhere."""
  from mtljax.models import encoders  # pylint: disable=g-import-not-at-top
  im2col, eigen = _im2col_conv(jax, jnp), encoders._conv_general_dilated

  def conv(lhs, rhs, *args, **kw):
    thin = rhs.shape[0] * rhs.shape[1] * rhs.shape[2] <= 32
    return (im2col if thin else eigen)(lhs, rhs, *args, **kw)
  return conv


def _slice_pool(jnp):
  """2×2 pooling as the max (or mean) of four strided slices."""
  def pool(x, kind):
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    a, b = x[:, 0:h:2, 0:w:2], x[:, 1:h:2, 0:w:2]
    c, d = x[:, 0:h:2, 1:w:2], x[:, 1:h:2, 1:w:2]
    if kind == "max":
      return jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))
    return (a + b + c + d) * 0.25
  return pool


def section_opt(cfg, res):
  """Step time with each of mtljax's choices, and without it, side by side.

  "without" swaps one module attribute while the step is built and compiled:
  the layers read `encoders._dot_general` / `_conv_general_dilated` when they
  are built, the train step reads `run_map.keep_where` when it is traced.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from mtljax.core import run_map as run_map_lib  # pylint: disable=g-import-not-at-top
  from mtljax.models import encoders  # pylint: disable=g-import-not-at-top
  from mtljax.models import parts  # pylint: disable=g-import-not-at-top

  def plain_dot(lhs, rhs, dimension_numbers, precision=None,
                preferred_element_type=None, **kw):
    return jax.lax.dot_general(lhs, rhs, dimension_numbers,
                               precision=precision,
                               preferred_element_type=preferred_element_type,
                               **kw)

  r_mlp, r_cnn = cfg["opt_mlp_runs"], cfg["opt_cnn_runs"]
  mlp = dict(encoder="mlp", width=cfg["mlp_width"], depth=cfg["mlp_depth"],
             image_shape=cfg["mlp_in"], tasks=cfg["tasks"],
             batch=cfg["mlp_batch"], seeds=tuple(range(r_mlp)),
             run_map="vmap")
  cnn = dict(encoder="cnn", width=cfg["cnn_width"], depth=cfg["cnn_depth"],
             image_shape=cfg["b3_image"], tasks=cfg["tasks"],
             batch=cfg["b3_batch"], seeds=tuple(range(r_cnn)), run_map="scan")
  cnn_name = f"quick CNN w{cfg['cnn_width']}, {r_cnn} runs, scan"
  # The study's program: every seed's MTL and 4 STL runs share its batch.
  study = dict(cnn, seeds=tuple(range(cfg["opt_study_seeds"])),
               modes=("mtl", "stl"), batch=cfg["opt_study_batch"])
  study_name = (f"study CNN w{cfg['cnn_width']}, {cfg['opt_study_seeds']} "
                f"seeds x (MTL + 4 STL), batch {cfg['opt_study_batch']}, "
                "scan")

  share_k = dict(study, arch="share_k", arch_kwargs={"shared_stages": 1})
  share_k_name = study_name.replace("study CNN", "study CNN share_k k=1")
  cases = {
      # (program, its setup, a patch for "off", or setup overrides for it)
      "fused first stage (vs each run's own)": (
          study_name, study, {"fuse_stem": False}),
      # E2's branching axis: stage 0 shared, stages 1-2 one copy per task.
      "fused first stage, share_k k=1 (vs each run's own)": (
          share_k_name, share_k, {"fuse_stem": False}),
      "looped task copies, share_k k=1 (vs vmapped: grouped convs)": (
          share_k_name, share_k, (parts, "COPIES_MAP", "vmap")),
      "custom matmul backward": (f"b1's MLP, {r_mlp} runs vmapped", mlp,
                                 (encoders, "_dot_general", plain_dot)),
      "custom conv backward": (cnn_name, cnn,
                               (encoders, "_conv_general_dilated",
                                jax.lax.conv_general_dilated)),
      # Not optimizations: a cost, and an alternative that was tried.
      "non-finite guard (vs none)": (
          f"b1's MLP, {r_mlp} runs vmapped", mlp,
          (run_map_lib, "keep_where", lambda ok, new, old: new)),
      "Eigen conv (vs im2col + matmul)": (
          cnn_name, cnn, (encoders, "_conv_general_dilated",
                          _im2col_conv(jax, jnp))),
      "Eigen first layer (vs im2col there only)": (
          cnn_name, cnn, (encoders, "_conv_general_dilated",
                          _first_layer_im2col(jax, jnp))),
      "reshape pooling (vs strided slices)": (
          cnn_name, cnn, (encoders, "_pool2x2", _slice_pool(jnp))),
  }
  out = {}
  # Cases on the same program share its "on" step: one build and compile
  # instead of up to four. Each case still times it interleaved with its own
  # "off".
  on_runners = {}
  for name, (what, setup, patch) in cases.items():
    if what not in on_runners:
      on_runners[what] = JaxSetup(**setup).runner()
    fns = {"on": on_runners[what]}
    if isinstance(patch, dict):
      fns["off"] = JaxSetup(**dict(setup, **patch)).runner()
    else:
      with _patched(*patch):
        fns["off"] = JaxSetup(**setup).runner()
        fns["off"](1)  # traced and compiled while patched
    timed = interleaved(fns, rounds=cfg["opt_rounds"], target_s=cfg["target_s"])
    on, off = timed["on"]["median_s"], timed["off"]["median_s"]
    out[name] = {"program": what, "on_ms": on * 1e3, "off_ms": off * 1e3,
                 "speedup": off / on}
  # The allocator setting is per process: one worker with it, one without.
  r_malloc = cfg["opt_mlp_runs"]
  on_off = {}
  for flag in ("1", "0"):
    on_off[flag] = run_worker("opt-malloc", cfg, env=dict(
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
