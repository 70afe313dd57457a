"""Registries: one per kind of component; a new one is one file + one line.

The defining property: a toy encoder registered from its own experiment file
(one file, one `register` call) trains through the CLI, with a setting of its
own passed from the config, and config validation knows its name and its
settings from the registry alone.
"""

import json
import os

import pytest

from mtljax import cli
from mtljax import config as config_lib
from mtljax import registry

TOY_EXPERIMENT = '''
"""A user's experiment file: an encoder of its own, registered in one line."""
import jax.numpy as jnp
from flax import nnx

from mtljax import registry
from mtljax.study import presets


class ToyEncoder(nnx.Module):
  convolutional = False

  def __init__(self, in_shape, *, width, depth, dropout, dtype, rngs,
               hidden=3):
    n = 1
    for d in in_shape:
      n *= d
    self.proj = nnx.Linear(n, hidden, rngs=rngs)
    self.out_features = hidden

  def __call__(self, x, *, rng=None, deterministic=True):
    return jnp.tanh(self.proj(x.reshape(x.shape[0], -1)))


registry.ENCODERS.register("toy", ToyEncoder)


def get_config(arg=None):
  c = presets.base(presets.parse_arg("smoke"))
  c.name = "toy"
  c.data.name = "mtl_scenes"
  c.modes = ("mtl", "stl")
  c.num_seeds = 1
  c.model.encoder = "toy"
  c.model.encoder_kwargs.hidden = 5
  c.train.progress = "none"
  return c
'''


@pytest.mark.slow
def test_a_users_encoder_trains_through_the_cli_with_its_own_setting(
    smoke_data_dir, tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(cli, "_setup_logging", lambda verbose=False: None)
  monkeypatch.setenv("MTLJAX_COMPILATION_CACHE", "")
  exp = tmp_path / "toy_exp.py"
  exp.write_text(TOY_EXPERIMENT)
  wd = tmp_path / "run"
  assert cli.main(["train", "--config", str(exp), "--workdir", str(wd),
                   "--config.model.encoder_kwargs.hidden=7"]) == 0
  with open(wd / "results.json") as f:
    results = json.load(f)
  assert results["config"]["model"]["encoder"] == "toy"
  assert results["config"]["model"]["encoder_kwargs"] == {"hidden": 7}
  by_arm = {r["arm"]: r for r in results["runs"]}
  # 32*32*3 inputs -> 7 features (+ bias), 4 heads of 7 -> 1 (+ bias): the
  # setting reached the encoder. STL: 4 encoders, one head each.
  encoder = 32 * 32 * 3 * 7 + 7
  assert by_arm["mtl"]["param_count"] == encoder + 4 * (7 + 1)
  assert by_arm["stl"]["param_count"] == 4 * (encoder + 7 + 1)
  capsys.readouterr()
  # A setting the constructor lacks: one error line before anything runs.
  assert cli.main(["train", "--config", str(exp), "--workdir",
                   str(tmp_path / "bad"),
                   "--config.model.encoder_kwargs.hiden=7"]) == 2
  err = capsys.readouterr().err
  assert ("config.model.encoder_kwargs.hiden: encoder 'toy' has no setting "
          "'hiden'; its settings: hidden") in err
  assert not (tmp_path / "bad").exists()


def test_registry_names_get_and_errors():
  assert {"cnn", "mlp"} <= set(registry.ENCODERS.names())
  assert {"hps", "share_k", "mmoe", "cgc", "cross_stitch", "mtan"} == set(
      registry.ARCHITECTURES.names())
  assert {"mtl_scenes", "digits_multilabel"} <= set(registry.DATASETS.names())
  assert {"adam", "adamw", "sgd"} <= set(registry.OPTIMIZERS.names())
  assert registry.TASK_TYPES.get("binary").primary_metric == "auc"
  with pytest.raises(config_lib.ConfigError,
                     match="config.model.encoder='cnnn' is not a registered "
                     "encoder \\(did you mean 'cnn'\\?\\)"):
    registry.ENCODERS.get("cnnn")


def test_reregistering_another_object_needs_overwrite():
  reg = registry.Registry("widget", "x.widget")
  reg.register("a", len)
  reg.register("a", len)  # the same object again (a file loaded twice)
  with pytest.raises(ValueError, match="already registered"):
    reg.register("a", max)
  reg.register("a", max, overwrite=True)
  assert reg.get("a") is max


def test_experiment_file_is_in_sys_modules_while_it_runs(tmp_path):
  """Classes defined there (dataclasses, flax modules) need their module."""
  exp = tmp_path / "dc_exp.py"
  exp.write_text(
      "from __future__ import annotations\n"
      "import dataclasses\n"
      "from mtljax import config\n"
      "@dataclasses.dataclass\n"
      "class Opts:\n"
      "  n: int = 1\n"
      "def get_config(arg=None):\n"
      "  return config.default_config()\n")
  cfg = config_lib.load_config(str(exp))
  assert cfg.name == "experiment"


def test_errors_module_is_a_leaf():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ("import sys, mtljax.errors, mtljax.registry; "
          "print(sorted(m for m in sys.modules if m.startswith('mtljax')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True, cwd=os.path.dirname(
                           os.path.dirname(__file__))).stdout
  assert out.strip() == "['mtljax', 'mtljax.errors', 'mtljax.registry']"
