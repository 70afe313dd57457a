"""The public Python API: train_and_evaluate, load_model(...).predict, report.

One tiny run (an MLP, one seed, mtl + stl, two learning rates, a few steps on
600/200/200-example splits) is trained once for the module; the checks read
it back. The key property: a loaded model's predictions reproduce the test
metrics in results.json, for MTL and for STL (whose tasks come from separate
networks, possibly of different learning rates).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import mtljax
from mtljax import errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = (600, 200, 200)


def tiny_config():
  c = mtljax.default_config()
  c.name = "api_test"
  c.num_seeds = 1
  c.modes = ("mtl", "stl")
  c.data.split_sizes = SPLITS
  c.model.encoder = "mlp"
  c.model.width = 16
  c.model.depth = 1
  # Two rates: STL then chooses per task, so load_model must combine
  # networks of different rates the way the report does.
  c.optimizer.learning_rates = (1e-3, 1e-2)
  c.train.batch_size = 16
  c.train.steps = 6
  c.train.eval_every = 3
  c.train.log_every = 3
  c.train.checkpoint_every = 3
  c.train.progress = "none"
  return c


@pytest.fixture(scope="module")
def trained(smoke_data_dir, tmp_path_factory):
  mp = pytest.MonkeyPatch()
  # The persistent cache would outlive the test (and change later compiles).
  mp.setenv("MTLJAX_COMPILATION_CACHE", "")
  wd = str(tmp_path_factory.mktemp("api") / "run")
  results = mtljax.train_and_evaluate(tiny_config(), wd)
  yield wd, results
  mp.undo()


@pytest.fixture(scope="module")
def test_split(trained):
  from mtljax import data  # pylint: disable=g-import-not-at-top
  return data.eval_arrays("mtl_scenes", "test", split_sizes=SPLITS, log=None)


def _run(results, arm, seed, lr):
  return next(r for r in results["runs"] if r["arm"] == arm
              and r["seed"] == seed and r["learning_rate"] == lr)


@pytest.mark.parametrize("arm", ["mtl", "stl"])
def test_predictions_reproduce_test_metrics(trained, test_split, arm):
  wd, results = trained
  on_disk = json.load(open(os.path.join(wd, "results.json")))
  assert on_disk["runs"] == json.loads(json.dumps(results["runs"]))
  model = mtljax.load_model(wd, arm=arm, seed=0)
  images, labels, mask = test_split
  probs = model.predict(images)
  names = results["dataset"]["task_names"]
  assert list(probs) == names == model.task_names
  summary = mtljax.report(wd, os.path.join(wd, "rep_" + arm))
  chosen = summary["conditions"][0]["arms"][arm]["lr"]["chosen"]
  assert model.learning_rates == chosen  # the report's own choice
  for t, name in enumerate(names):
    p = probs[name]
    assert p.shape == (len(images),) and np.all((p >= 0) & (p <= 1))
    m = mask[:, t]
    auc = roc_auc_score(labels[m, t], p[m])
    want = _run(results, arm, 0, chosen[name])["test"]["per_task"][name]
    assert auc == pytest.approx(want["auc"], abs=1e-6), name
  # A fixed rate: every task from networks of that rate.
  fixed = mtljax.load_model(wd, arm=arm, learning_rate=1e-2)
  assert set(fixed.learning_rates.values()) == {1e-2}
  probs = fixed.predict(images)
  for t, name in enumerate(names):
    m = mask[:, t]
    want = _run(results, arm, 0, 1e-2)["test"]["per_task"][name]["auc"]
    assert roc_auc_score(labels[m, t], probs[name][m]) == pytest.approx(
        want, abs=1e-6)


def test_uint8_images_equal_normalised_floats(trained):
  from mtljax import data  # pylint: disable=g-import-not-at-top
  wd, _ = trained
  raw = data.load_split("mtl_scenes", "test", split_sizes=SPLITS,
                        num_examples=10, log=None)["image"]
  model = mtljax.load_model(wd, arm="stl")
  a, b = model.predict(raw), model.predict(data.normalize(raw))
  for name in a:
    np.testing.assert_array_equal(a[name], b[name])
  # A batch of other size than the split (padding) gives the same values.
  c = model.predict(raw[:3])
  for name in a:
    np.testing.assert_allclose(c[name], a[name][:3], rtol=1e-6)
  assert all(v.shape == (0,) for v in model.predict(raw[:0]).values())


def test_bad_images_are_value_errors(trained):
  wd, _ = trained
  model = mtljax.load_model(wd)
  with pytest.raises(ValueError, match=r"\[N, 32, 32, 3\]"):
    model.predict(np.zeros((2, 24, 24, 1), np.uint8))
  with pytest.raises(ValueError, match=r"images\[None\]"):
    model.predict(np.zeros((32, 32, 3), np.uint8))
  with pytest.raises(ValueError, match="normalised"):
    model.predict(np.full((1, 32, 32, 3), 255.0, np.float32))
  with pytest.raises(ValueError, match="dtype"):
    model.predict(np.zeros((1, 32, 32, 3), np.int64))


def test_load_model_errors_name_what_exists(trained, tmp_path):
  wd, _ = trained
  with pytest.raises(errors.ConfigError, match="its arms: mtl, stl"):
    mtljax.load_model(wd, arm="stl_matched")
  with pytest.raises(errors.ConfigError, match="no seed 3; its seeds: 0"):
    mtljax.load_model(wd, seed=3)
  with pytest.raises(errors.ConfigError, match="its rates: 0.001, 0.01"):
    mtljax.load_model(wd, learning_rate=3e-3)
  with pytest.raises(errors.ConfigError, match="does not exist"):
    mtljax.load_model(tmp_path / "nowhere")
  with pytest.raises(errors.ConfigError, match="results.json"):
    mtljax.load_model(tmp_path)
  # Results without checkpoints (deleted to save space).
  bare = tmp_path / "bare"
  bare.mkdir()
  for f in ("results.json", "config.json"):
    (bare / f).write_text(open(os.path.join(wd, f)).read())
  with pytest.raises(errors.CheckpointError, match="no checkpoints"):
    mtljax.load_model(bare)
  assert not (bare / "checkpoints").exists()  # nothing created
  # An encoder that this process has not registered (its module not imported).
  cfg = json.load(open(bare / "config.json"))
  cfg["model"]["encoder"] = "not_imported"
  (bare / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(errors.ConfigError, match="must be registered"):
    mtljax.load_model(bare)


def test_report_writes_markdown(trained, tmp_path):
  wd, _ = trained
  summary = mtljax.report([wd], tmp_path / "report")
  assert (tmp_path / "report" / "report.md").read_text().count("mtl")
  assert set(summary["conditions"][0]["arms"]) == {"mtl", "stl"}
  with pytest.raises(errors.ReportError, match="stl_matched"):
    mtljax.report([wd], tmp_path / "r2", baseline="stl_matched")


def test_import_mtljax_does_not_import_jax():
  code = ("import mtljax, sys; assert 'jax' not in sys.modules; "
          "assert sorted(mtljax.__all__) == ['config', 'data', 'default_config', "
          "'load_model', 'methods', 'report', 'tasks', 'train_and_evaluate']; "
          "mtljax.load_model; mtljax.report; mtljax.train_and_evaluate; "
          "mtljax.tasks.Multiclass('d', num_classes=3); "
          "assert 'jax' not in sys.modules, 'api'; "
          "mtljax.default_config().model.encoder")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_session_enables_the_cache_and_leaves_logging_alone(tmp_path):
  code = (
      "import logging, os, sys\n"
      "from mtljax.run import session\n"
      "assert session.setup_logging()\n"
      "assert not session.setup_logging()  # once\n"
      "log = logging.getLogger('mtljax')\n"
      "assert log.getEffectiveLevel() == logging.INFO and not log.propagate\n"
      "session.prepare()\n"
      "import jax\n"
      "assert jax.config.jax_compilation_cache_dir == os.environ["
      "'MTLJAX_COMPILATION_CACHE'], jax.config.jax_compilation_cache_dir\n"
      "assert not session.tune_allocator_if_early()  # jax is imported now\n")
  env = dict(os.environ, MTLJAX_COMPILATION_CACHE=str(tmp_path / "xla"))
  subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)
  # An application's logging set-up is left alone.
  code = ("import logging; logging.basicConfig(level=logging.WARNING)\n"
          "from mtljax.run import session\n"
          "assert not session.setup_logging()\n"
          "assert not logging.getLogger('mtljax').handlers\n")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_config_of_an_older_workdir_with_model_pool_loads():
  """Before model.encoder_kwargs, the CNN's pooling was model.pool."""
  from mtljax import config as config_lib  # pylint: disable=g-import-not-at-top
  from mtljax.run import api  # pylint: disable=g-import-not-at-top
  old = config_lib.to_dict(config_lib.default_config())
  old["model"].pop("encoder_kwargs")
  old["model"]["pool"] = "avg"
  cfg = api._config_from_json(old, "/nowhere")  # pylint: disable=protected-access
  assert cfg.model.encoder_kwargs.pool == "avg"
  old["model"]["pool"] = "max"
  cfg = api._config_from_json(old, "/nowhere")  # pylint: disable=protected-access
  assert "pool" not in cfg.model.encoder_kwargs
