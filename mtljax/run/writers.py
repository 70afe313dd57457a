"""Run outputs: metrics.jsonl, TensorBoard events, progress, JSON files.

    out = Writers(workdir, enabled=True, start_step=0, progress="auto", total=N)
    out.log({"step": 100, "kind": "train", "arms": {"mtl": {"loss": 0.4}}})
    out.progress(100)
    out.close()
    write_json(path, obj)        # atomic; NaN/inf become null

TensorBoard events are written with tensorboardX (no TensorFlow needed). On a
resume from step k, metrics.jsonl is cut back to step k and TensorBoard is
told to purge later events, so logs read as one uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
from importlib import metadata
from typing import Any

import jax

from mtljax.run import host

log = logging.getLogger("mtljax")

_PACKAGES = ("mtljax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint",
             "tensorflow-datasets", "grain", "numpy", "scipy", "ml-collections")


def _clean(obj: Any) -> Any:
  """JSON-safe copy: NaN/inf → None, numpy scalars → python."""
  if isinstance(obj, dict):
    return {str(k): _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def write_json(path: str, obj: Any) -> None:
  """Writes JSON atomically (tmp file + rename): never a half-written file."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      json.dump(_clean(obj), f, indent=1, sort_keys=False)
      f.write("\n")
    os.replace(tmp, path)
  except BaseException:
    # A full disk (or a kill) must not leave a half-written file behind.
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def environment() -> dict:
  """Package versions, devices and host, for reproducibility."""
  versions = {}
  for p in _PACKAGES:
    try:
      versions[p] = metadata.version(p)
    except metadata.PackageNotFoundError:
      pass
  return {
      "python": sys.version.split()[0], "platform": platform.platform(),
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "process_count": jax.process_count(), "packages": versions,
      # Which machine kind the figures come from (their speed, and their
      # float rounding, differ by kind).
      "cpu": host.cpu_features(), "cpu_count": os.cpu_count(),
      "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
  }


def _scalars(prefix: str, obj: Any):
  if isinstance(obj, dict):
    for k, v in obj.items():
      yield from _scalars(f"{prefix}/{k}" if prefix else str(k), v)
  elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
    yield prefix, float(obj)


class Writers:
  """metrics.jsonl + TensorBoard + a progress bar or periodic log lines."""

  def __init__(self, workdir: str, *, enabled: bool, start_step: int,
               progress: str, total: int):
    self.enabled = enabled
    self.total = total
    self._bar = None
    self._tb = None
    self._jsonl = None
    if not enabled:
      return
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
      self._truncate(path, start_step)
    self._jsonl = open(path, "a")
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                             purge_step=start_step or None)
    use_bar = progress == "bar" or (progress == "auto" and sys.stderr.isatty())
    self._log_lines = progress in ("log", "auto") and not use_bar
    if use_bar:
      from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total, initial=start_step, unit="step",
                       dynamic_ncols=True, desc="train")
    self._last_step = start_step

  @staticmethod
  def _truncate(path: str, step: int) -> None:
    keep = []
    with open(path) as f:
      for line in f:
        try:
          if json.loads(line).get("step", 0) <= step:
            keep.append(line)
        except json.JSONDecodeError:
          break  # a torn last line from a kill: drop it and what follows
    with open(path, "w") as f:
      f.writelines(keep)

  def log(self, record: dict) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps(_clean(record)) + "\n")
    self._jsonl.flush()
    step, kind = record["step"], record.get("kind", "train")
    for tag, value in _scalars(kind, {k: v for k, v in record.items()
                                      if k not in ("step", "kind")}):
      self._tb.add_scalar(tag, value, step)
    if self._bar is not None and kind == "train":
      arms = record.get("arms", {})
      self._bar.set_postfix({a: f"{m.get('loss', float('nan')):.3f}"
                             for a, m in arms.items()}, refresh=False)
    elif self._log_lines:
      key = "loss" if kind == "train" else record.get("metric", "auc")
      arms = " ".join(f"{a}:{key}={m.get(key, float('nan')):.4f}"
                      for a, m in record.get("arms", {}).items() if m)
      extra = (f" {record['steps_per_sec']:.1f} steps/s"
               if "steps_per_sec" in record else "")
      log.info("step %d/%d %s %s%s", step, self.total, kind, arms, extra)

  def progress(self, step: int) -> None:
    if self._bar is not None:
      self._bar.update(step - self._last_step)
    self._last_step = step

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      self._tb.close()
    if self._jsonl is not None:
      self._jsonl.close()
