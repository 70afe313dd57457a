"""Config loading, overrides, validation errors and sweeps."""

import os

import pytest

from mtljax import config as config_lib

E1 = os.path.join(os.path.dirname(__file__), "..", "experiments",
                  "e1_mtl_vs_stl.py")


def test_load_variant_and_override():
  cfg = config_lib.load_config(f"{E1}:smoke", ["model.width=5",
                                               "optimizer.learning_rates=(1e-3,2e-3)"])
  assert cfg.model.width == 5
  assert cfg.optimizer.learning_rates == (1e-3, 2e-3)
  assert cfg.modes == ("mtl", "stl", "stl_matched")


@pytest.mark.parametrize("override, match", [
    ("model.widht=4", "unknown config field 'model.widht'.*did you mean 'model.width'"),
    ("model.width=0", "config.model.width must be > 0; got 0"),
    ("model.width=-3", "config.model.width must be > 0"),
    ("optimizer.learning_rates=(0.0,)", "learning_rates.*> 0"),
    ("optimizer.learning_rates=()", "learning_rates must be non-empty"),
    ("modes=()", "config.modes is empty"),
    ("modes=('mtl','joint')", "config.modes='joint' is not one of"),
    ("model.width=wide", "config.model.width must be an integer; got 'wide'"),
    ("data.label_fraction=(1.5,)", "label_fraction.*1.5"),
    ("train.batch_size=10", None),
    ("num_devices=3", "batch_size=16 is not divisible by config.num_devices=3"),
    ("data.split_sizes=(10,10)", "split_sizes must be"),
    ("train.eval_every=100", "eval_every=100 exceeds"),
    ("loss.missing_policies=('mask','mask')", "missing_policies"),
    ("bogus", "must look like key=value"),
])
def test_validation_errors_name_field_and_value(override, match):
  if match is None:
    config_lib.load_config(f"{E1}:smoke", [override])
    return
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.load_config(f"{E1}:smoke", [override])


def test_bad_variant_and_missing_file():
  with pytest.raises(config_lib.ConfigError, match="unknown config variant 'fast'"):
    config_lib.load_config(f"{E1}:fast")
  with pytest.raises(config_lib.ConfigError, match="config file not found"):
    config_lib.load_config("experiments/nope.py")


def test_sweep_points_and_names():
  points = config_lib.load_sweep(f"{E1}:full")
  assert points == [{"data.name": "mtl_scenes"}, {"data.name": "multi_mnist"}]
  assert config_lib.point_name(points[1]) == "name=multi_mnist"
  h = config_lib.Hyper()
  grid = h.product([h.sweep("model.width", [1, 2]),
                    h.sweep("seed", [0, 10, 20])])
  assert len(grid) == 6
  z = h.zip([h.sweep("model.width", [1, 2]), h.sweep("seed", [0, 10])])
  assert z == [{"model.width": 1, "seed": 0}, {"model.width": 2, "seed": 10}]
  with pytest.raises(config_lib.ConfigError, match="equal-length"):
    h.zip([h.sweep("model.width", [1, 2]), h.sweep("seed", [0])])


@pytest.mark.parametrize("name", sorted(os.listdir(
    os.path.join(os.path.dirname(__file__), "..", "experiments"))))
def test_every_experiment_and_sweep_validates(name):
  if not name.endswith(".py"):
    return
  path = os.path.join(os.path.dirname(E1), name)
  for variant in ("smoke", "quick", "full", "gpu"):
    if name in ("baselines.py", "celeb_a.py", "difficulty.py"):
      continue  # their argument is a dataset, not a variant
    base = config_lib.load_config(f"{path}:{variant}")
    points = config_lib.load_sweep(f"{path}:{variant}")
    assert points
    # Every point is a valid config (the dataset checks run in preflight).
    for p in points:
      config_lib.validate(config_lib.apply_overrides(base, p))


@pytest.mark.parametrize("bad", ["(0,0)", "(-1,)", "(0.5,)"])
def test_stl_tasks_must_be_distinct_indices(bad):
  with pytest.raises(config_lib.ConfigError, match="config.stl_tasks"):
    config_lib.load_config(f"{E1}:smoke", [f"stl_tasks={bad}"])


def test_encoder_settings_are_checked_against_its_constructor():
  cfg = config_lib.load_config(f"{E1}:smoke", ["model.encoder=cnn", "model.encoder_kwargs.pool=avg"])
  assert cfg.model.encoder_kwargs.pool == "avg"
  with pytest.raises(config_lib.ConfigError,
                     match="config.model.encoder_kwargs.poool: encoder 'cnn' "
                     "has no setting 'poool'; its settings: pool"):
    config_lib.load_config(f"{E1}:smoke", ["model.encoder=cnn", "model.encoder_kwargs.poool=max"])
  with pytest.raises(config_lib.ConfigError,
                     match="'width' is set by mtljax"):
    config_lib.load_config(f"{E1}:smoke", ["model.encoder_kwargs.width=4"])


def test_encoder_setting_values_are_checked_before_training():
  from mtljax.run import preflight  # pylint: disable=g-import-not-at-top
  cfg = config_lib.load_config(f"{E1}:smoke",
                               ["model.encoder=cnn",
                                "model.encoder_kwargs.pool=median"])
  with pytest.raises(config_lib.ConfigError,
                     match=r"config.model \(encoder 'cnn'\): pool must be "
                     "'max' or 'avg'; got 'median'"):
    preflight.check(cfg)


@pytest.mark.parametrize("field, value", [
    ("model.encoder", "transformer"), ("model.arch", "mixture"),
    ("optimizer.name", "lion"), ("optimizer.schedule", "linear"),
    ("loss.normalize", "per_batch")])
def test_component_names_come_from_the_registries(field, value):
  with pytest.raises(config_lib.ConfigError,
                     match=f"config.{field}={value!r} is not a registered"):
    config_lib.load_config(f"{E1}:smoke", [f"{field}={value}"])


def test_reproduce_finds_the_experiments_or_says_where_it_looked(tmp_path,
                                                                 monkeypatch):
  from mtljax.study import reproduce  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv("MTLJAX_EXPERIMENTS", raising=False)
  monkeypatch.chdir(tmp_path)  # no ./experiments: the checkout's is found
  assert os.path.isfile(os.path.join(reproduce.experiments_dir(),
                                     "e1_mtl_vs_stl.py"))
  with pytest.raises(config_lib.ConfigError,
                     match="looked in /nonexistent.*--experiments DIR"):
    reproduce.experiments_dir("/nonexistent")
  with pytest.raises(config_lib.ConfigError):
    reproduce.reproduce("smoke", str(tmp_path / "w"),
                        experiments=str(tmp_path))
  assert not (tmp_path / "w").exists()  # nothing created on a bad call
