"""Data: procedural TFDS datasets, label controls and the grain train feed.

    spec = data.build("mtl_scenes")            # once; cached in the data dir
    pipe = data.TrainPipeline("mtl_scenes", seeds=(0, 1, 2),
                              global_batch_size=128, label_budget=300)
    for batch in pipe.batches(start_step):     # {"image", "labels", "mask"}
      ...                                      # each [S, B, ...]
    images, labels, mask = data.eval_arrays("mtl_scenes", "validation")

Modules: `scenes` and `digits` render the images, `builders` wraps them as
TFDS ArrayRecord datasets, `labels` implements label fractions, budgets and
the shuffle test, `pipeline` reads the splits and feeds training.
"""

from mtljax.data.arrays import register_arrays
from mtljax.data.builders import build
from mtljax.data.builders import DATASET_NAMES
from mtljax.data.builders import dataset_names
from mtljax.data.builders import DatasetEntry
from mtljax.data.builders import DataError
from mtljax.data.builders import dataset_spec
from mtljax.data.builders import DatasetSpec
from mtljax.data.builders import is_built
from mtljax.data.builders import resolve_data_dir
from mtljax.data.pipeline import eval_arrays
from mtljax.data.pipeline import eval_split
from mtljax.data.pipeline import EvalSplit
from mtljax.data.sources import open_split
from mtljax.data.pipeline import load_split
from mtljax.data.pipeline import normalize
from mtljax.data.pipeline import TrainPipeline

__all__ = [
    "DATASET_NAMES", "dataset_names", "DatasetEntry", "DatasetSpec", "DataError", "dataset_spec", "build",
    "is_built", "resolve_data_dir", "TrainPipeline", "load_split",
    "eval_arrays", "eval_split", "EvalSplit", "open_split", "normalize", "register_arrays",
]
