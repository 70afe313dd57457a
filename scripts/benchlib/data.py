"""B8: the input pipeline's host memory on a celeb_a-sized dataset.

The dataset is `tfds:celeb_a_sized`, a TFDS builder defined here and served by
`mtljax.data.testing.mock_tfds` (no files, no download): celeb_a's 40 boolean
attributes and its split sizes (162,770 / 19,867 / 19,962), with 64x64x3
uint8 images (celeb_a as mtljax trains on it, `resize=(64, 64)`). The real
`tfds:celeb_a` mock generates 218x178x3 images and then needs a resize,
~1.6 ms a record: scanning the labels of its train split alone would take
~4 min, most of it spent on images that the label scan throws away.

The measurement runs in a subprocess worker, so that its peak RSS is the
pipeline's alone (Python, numpy, grain and TFDS imports included: the
"imports" phase). The peak is VmHWM (see `_peak_mb` for why not
`ru_maxrss`, which is recorded too). It does what
`mtljax.run.train` does with the data:
  1. `TrainPipeline(..., in_memory="auto")`: at this size the images take
     2.0 GB, more than `IN_MEMORY_BYTES`, so the pipeline streams them and
     only scans the labels (timed: `label_scan_s`);
  2. reads `b8_batches` batches from `pipe.batches(0)` (3 seeds x 256);
  3. opens the validation and test splits with `eval_split` (as the trainer
     does, `in_memory="auto"`: 244 MB of uint8 each, held) and makes one
     evaluation pass over the validation split in chunks of 1024
     (`.images(start, stop)`); then the same pass streamed
     (`in_memory="never"`).
RSS (current, from /proc/self/status, and peak) is recorded after each.

Under the mock, each record is generated when it is read (~0.5 ms on the
bench machine, in Python; a label read generates the image too), so
`batches_per_s` and the seconds here measure the mock's generation more
than mtljax, not a prepared ArrayRecord dataset's speed (for celeb_a: JPEG
decode and resize). The memory figures are what this section is for.
"""

from __future__ import annotations

import os
import resource
import statistics
import time

from benchlib.common import _cpu_model, run_worker, SMOKE

NAME = "tfds:celeb_a_sized"
TFDS_OPTIONS = {"tasks": {"attributes/*": "binary"}}

# celeb_a's attributes, in its feature order.
CELEB_A_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes",
    "Bald", "Bangs", "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair",
    "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
    "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young")
assert len(CELEB_A_ATTRIBUTES) == 40

# celeb_a at full resolution, for the "what the old path needed" figure.
CELEB_A_FULL_SHAPE = (218, 178, 3)

_BUILDER = []  # the builder class, defined (and registered) once


def builder_class():
  """Defines and registers the `celeb_a_sized` TFDS builder (once)."""
  if _BUILDER:
    return _BUILDER[0]
  import inspect  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class CelebASized(tfds.core.GeneratorBasedBuilder):
    """celeb_a's features at 64x64, for `mock_tfds` only (no data)."""

    VERSION = tfds.core.Version("1.0.0")

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):  # pylint: disable=no-self-argument
      # As tests/test_tfds_source.py's toy builder: this file.
      return epath.Path(inspect.getfile(cls))

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(shape=(64, 64, 3)),
              "attributes": {a: np.bool_ for a in CELEB_A_ATTRIBUTES},
          }))

    def _split_generators(self, dl_manager):
      raise NotImplementedError(
          "celeb_a_sized has no data: it is served by "
          "mtljax.data.testing.mock_tfds (scripts/benchlib/data.py)")

    def _generate_examples(self):
      raise NotImplementedError

  _BUILDER.append(CelebASized)
  return CelebASized


def _status_mb(key: str) -> float:
  """A /proc/self/status memory line ("VmRSS", "VmHWM"), MiB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(key + ":"):
        return int(line.split()[1]) / 1024
  return float("nan")


def _rss_mb() -> float:
  """Current resident set size, MiB."""
  return _status_mb("VmRSS")


def _peak_mb() -> float:
  """Peak resident set size of this process so far, MiB (VmHWM).

  Not `ru_maxrss`: Linux carries that over from the process before `exec`,
  so a worker started by a bench process that has grown to several GB in
  earlier sections would report the parent's peak. VmHWM is the high-water
  mark of this process's own memory (recorded as `ru_maxrss_mb` too).
  """
  return _status_mb("VmHWM")


def _ru_maxrss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB


def _eval_pass(ev, chunk: int) -> float:
  """Seconds for one pass over `ev` in chunks (each chunk consumed)."""
  t0 = time.perf_counter()
  total = 0.0
  for start in range(0, len(ev), chunk):
    x = ev.images(start, min(len(ev), start + chunk))
    total += float(x[:, 0, 0, 0].sum())  # touch it, as an eval step would
  return time.perf_counter() - t0


def worker_b8(cfg) -> dict:
  """Runs in a subprocess: the pipeline's RSS is all this process holds."""
  rss, peak = {"start": _rss_mb()}, {"start": _peak_mb()}

  def mark(phase):
    rss[phase], peak[phase] = _rss_mb(), _peak_mb()

  import numpy as np  # pylint: disable=g-import-not-at-top
  from mtljax import data as data_lib  # pylint: disable=g-import-not-at-top
  from mtljax import hostmem  # pylint: disable=g-import-not-at-top
  from mtljax.data import pipeline  # pylint: disable=g-import-not-at-top
  from mtljax.data import testing  # pylint: disable=g-import-not-at-top
  builder_class()
  mark("imports")

  n, (n_val, n_test) = cfg["b8_train"], cfg["b8_eval"]
  # Smoke sizes fit in memory, where "auto" would not stream: force it.
  in_memory = cfg["b8_in_memory"]
  seeds, batch, chunk = (0, 1, 2), cfg["b8_batch"], cfg["b8_chunk"]
  out = {"num_examples": n, "eval_examples": {"validation": n_val,
                                              "test": n_test},
         "in_memory": in_memory, "seeds": len(seeds),
         "global_batch_size": batch, "eval_chunk": chunk,
         "dataset": f"{NAME} under mtljax.data.testing.mock_tfds"}
  with testing.mock_tfds(num_examples=n):
    # 1. Construction: the spec, and the label scan of the train split.
    t0 = time.perf_counter()
    pipe = data_lib.TrainPipeline(
        NAME, seeds=seeds, global_batch_size=batch,
        tfds_options=TFDS_OPTIONS, process_index=0, process_count=1,
        in_memory=in_memory, log=None)
    out["label_scan_s"] = time.perf_counter() - t0
    mark("pipeline")
    if not pipe.streaming:
      raise RuntimeError(f"b8: the train pipeline holds the images in memory "
                         f"({n} examples, in_memory={in_memory!r}); it must "
                         "stream them")
    shape = tuple(int(s) for s in pipe.image_shape)
    out["image_shape"] = list(shape)
    out["streaming"] = pipe.streaming

    # 2. Batches, streamed (grain prefetches on its thread).
    it = pipe.batches(0)
    times = []
    t_prev = time.perf_counter()
    for _ in range(cfg["b8_batches"]):
      b = next(it)
      assert b["image"].shape[:2] == (len(seeds), batch), b["image"].shape
      now = time.perf_counter()
      times.append(now - t_prev)
      t_prev = now
    del it, b
    warm = times[cfg["b8_warmup"]:] or times
    out["batches"] = len(times)
    out["batch_s_median"] = statistics.median(warm)
    out["batches_per_s"] = 1.0 / out["batch_s_median"]
    out["records_per_s"] = out["batches_per_s"] * len(seeds) * batch
    mark("batches")

    # 3. Evaluation splits as the trainer opens them, and one pass.
    t0 = time.perf_counter()
    val = data_lib.eval_split(NAME, "validation", num_examples=n_val,
                              tfds_options=TFDS_OPTIONS, log=None)
    test = data_lib.eval_split(NAME, "test", num_examples=n_test,
                               tfds_options=TFDS_OPTIONS, log=None)
    out["eval_open_s"] = time.perf_counter() - t0
    out["eval_held_in_memory"] = (
        n_val * int(np.prod(shape)) <= pipeline.IN_MEMORY_BYTES)
    out["eval_pass_s"] = _eval_pass(val, chunk)
    mark("eval")
    # The same pass, each chunk read from the source.
    streamed = data_lib.eval_split(NAME, "validation", num_examples=n_val,
                                   tfds_options=TFDS_OPTIONS,
                                   in_memory="never", log=None)
    out["eval_pass_streamed_s"] = _eval_pass(streamed, chunk)
    mark("eval_streamed")
    del pipe, val, test, streamed

  out["rss_mb"] = rss
  out["peak_rss_mb_by_phase"] = peak
  out["peak_rss_mb"] = _peak_mb()
  out["ru_maxrss_mb"] = _ru_maxrss_mb()
  out["under_4gb"] = out["peak_rss_mb"] * 2**20 < 4e9
  # The old path: the train split held as uint8, validation and test as
  # float32.
  def old_gb(image_shape):
    size = int(np.prod(image_shape))
    return (n * size + (n_val + n_test) * size * 4) / 1e9
  out["in_memory_equivalent_gb"] = old_gb(shape)
  out["in_memory_equivalent_full_res_gb"] = old_gb(CELEB_A_FULL_SHAPE)
  out["in_memory_bytes_threshold"] = pipeline.IN_MEMORY_BYTES
  out["allocator_tuned"] = hostmem.tune_allocator()
  out["cpu"] = _cpu_model()
  out["nproc"] = os.cpu_count()
  return out


def section_b8(cfg, res):
  t0 = time.perf_counter()
  out = run_worker("b8", cfg)
  out["wall_s"] = time.perf_counter() - t0
  out["smoke"] = cfg is SMOKE
  res["b8"] = out
