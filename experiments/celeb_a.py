"""CelebA's 40 face attributes as 40 binary tasks, from a prepared TFDS copy.

CelebA is not generated here: prepare it once, on a machine with internet
(see the README, "Using a TFDS dataset"), then

    TFDS_DATA_DIR=/data/tfds mtljax train --config experiments/celeb_a.py:quick \
        --workdir w/celeb_a

MTL (one CNN with 40 heads) against 40 single-task CNNs, on 64x64 images.
Every split is read through `tfds.data_source` (ArrayRecord, no TensorFlow)
and the training images are streamed, not held in memory (2 GB at 64x64).
The smoke variant is what the tests run under `tfds.testing.mock_data`
(random examples, no files): it checks the path, not a result.
"""

from mtljax.study import presets


def get_config(arg=None):
  v = presets.parse_arg(arg)
  c = presets.base(v)
  c.name = "celeb_a"
  c.data.name = "tfds:celeb_a"
  c.data.split_sizes = ()  # A TFDS dataset's splits are its own.
  c.data.tfds.tasks = (("attributes/*", "binary"),)
  c.data.tfds.resize = (32, 32) if v.name == "smoke" else (64, 64)
  c.modes = ("mtl", "stl")
  c.model.encoder = presets.encoder(v)
  c.model.width = 16
  if v.name == "smoke":
    c.stl_tasks = (0, 1)  # Two of the 40 STL networks: the path, not a study.
  else:
    c.train.batch_size = 128
    c.train.steps = {"quick": 2000, "full": 10000}[v.name]
    c.train.eval_every = c.train.steps // 10
    c.train.checkpoint_every = c.train.steps // 5
    c.data.eval_examples = 5000  # of ~20k per split: evaluation stays cheap
  return c


def get_sweep(h, arg=None):
  """Network size: does one 40-head network need more width than one task?"""
  v = presets.parse_arg(arg)
  return h.sweep("model.width", [4, 16] if v.name == "smoke" else [8, 16, 32])
