"""Model shapes, parameter counts and both modes' networks."""

import jax
import numpy as np
import pytest

from mtljax import models
from mtljax.core import runs
from mtljax import config as config_lib
from tests.helpers import tiny_model_cfg


def test_mlp_logits_shape_and_param_counts():
  cfg = tiny_model_cfg("mlp", width=8, depth=2)
  graphdef, params, model_state = models.create(cfg, (2, 2, 3), 4,
                                                jax.random.key(0))
  assert model_state == {}  # no BatchNorm: nothing but parameters
  logits, _ = models.apply(graphdef, params, model_state,
                           np.zeros((5, 2, 2, 3), np.float32))
  assert logits.shape == (5, 4) and logits.dtype == np.float32
  encoder = (12 * 8 + 8) + (8 * 8 + 8)
  head = 8 + 1
  assert models.param_count(params) == encoder + 4 * head  # MTL
  one = np.eye(4)[2]
  assert models.param_count(params, one) == encoder + head  # one STL network
  assert models.count_params(cfg, (2, 2, 3), 4) == encoder + 4 * head


def test_cnn_width_scales_channels():
  small = models.count_params(tiny_model_cfg("cnn", 4, 3), (8, 8, 3), 4)
  large = models.count_params(tiny_model_cfg("cnn", 8, 3), (8, 8, 3), 4)
  # Conv weights dominate and scale ~width^2.
  assert 3.0 < large / small < 4.2
  graphdef, params, model_state = models.create(
      tiny_model_cfg("cnn", 4, 3), (8, 8, 3), 4, jax.random.key(0))
  assert models.apply(graphdef, params, model_state,
                      np.zeros((3, 8, 8, 3), np.float32))[0].shape == (3, 4)


def test_programs_and_param_matched_width():
  cfg = config_lib.default_config()
  cfg.model = tiny_model_cfg("mlp", width=32, depth=2)
  cfg.modes = ("mtl", "stl", "stl_matched")
  cfg.optimizer.learning_rates = (1e-3, 1e-2)
  progs = runs.build_programs(cfg, (2, 2, 3), 4)
  assert [p.model_cfg.width for p in progs][0] == 32
  same = progs[0]
  assert [g.arm for g in same.groups].count("mtl") == 2          # 1 group × 2 lr
  assert [g.arm for g in same.groups].count("stl") == 8          # 4 tasks × 2 lr
  matched = progs[1]
  counts = runs.group_param_counts(matched, (2, 2, 3), 4)
  mtl = models.count_params(cfg.model, (2, 2, 3), 4)
  total = sum(counts[::2])  # one learning rate: 4 networks
  # The matched STL width puts 4 networks within one width step of one MTL.
  assert abs(total - mtl) / mtl < 0.25
  specs = same.specs([0, 1, 2])
  assert specs["task_mask"].shape == (3, 10, 4)
  assert specs["seed"][:, 0].tolist() == [0, 1, 2]


def test_unknown_encoder_raises():
  cfg = tiny_model_cfg()
  cfg.encoder = "transformer"
  with pytest.raises(ValueError, match="model.encoder"):
    models.create(cfg, (2, 2, 3), 4, jax.random.key(0))


@pytest.mark.parametrize("shape,axes,fan_in", [
    ((300, 200), None, 300),            # dense [in, out]
    ((3, 3, 16, 64), None, 144),        # conv [h, w, in, out]
    ((4, 500), (1,), 500),              # stacked heads [T, feat]
])
def test_lecun_normal_matches_jax_statistics(shape, axes, fan_in):
  from mtljax.models.encoders import lecun_normal
  ours = np.asarray(lecun_normal(axes)(jax.random.key(1), shape))
  assert ours.shape == shape
  # Reference: jax's own initialiser with the same fan-in, on a 2-D shape.
  ref = np.asarray(jax.nn.initializers.lecun_normal()(
      jax.random.key(2), (fan_in, ours.size // fan_in)))
  np.testing.assert_allclose(ours.std(), ref.std(), rtol=0.05)
  np.testing.assert_allclose(ours.std(), 1 / np.sqrt(fan_in), rtol=0.05)
  assert np.abs(ours).max() <= 2 / 0.8796 / np.sqrt(fan_in) + 1e-6  # truncated


def test_graphdef_matches_a_built_network():
  cfg = tiny_model_cfg("cnn", 4, 2)
  graphdef, params, model_state = models.create(cfg, (8, 8, 3), 4,
                                                jax.random.key(0))
  abstract = models.graphdef(cfg, (8, 8, 3), 4)
  x = np.ones((2, 8, 8, 3), np.float32)
  np.testing.assert_array_equal(
      models.apply(abstract, params, model_state, x)[0],
      models.apply(graphdef, params, model_state, x)[0])


def test_stl_tasks_limits_the_stl_networks():
  cfg = config_lib.default_config()
  cfg.model = tiny_model_cfg("mlp", width=32, depth=2)
  cfg.modes = ("mtl", "stl", "stl_matched")
  cfg.stl_tasks = (2,)
  progs = runs.build_programs(cfg, (2, 2, 3), 4)
  stl = [g for p in progs for g in p.groups if g.mode == "stl"]
  assert [g.task_mask for g in stl] == [(0, 0, 1, 0)] * 2   # stl, stl_matched
  assert [g.task_mask for g in progs[0].groups if g.mode == "mtl"] == [
      (1, 1, 1, 1)]
  cfg.stl_tasks = (4,)
  with pytest.raises(config_lib.ConfigError, match="out of range"):
    runs.build_programs(cfg, (2, 2, 3), 4)


def _np_cnn(params, x, pool):
  """numpy reference: [conv3x3 SAME → ReLU → 2×2 pool] × depth → global pool."""
  red = np.max if pool == "max" else np.mean
  for conv in params["encoder"]["convs"].values():
    w, b = np.asarray(conv["kernel"]), np.asarray(conv["bias"])
    n, h, wd, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = np.zeros((n, h, wd, w.shape[-1]))
    for i in range(3):
      for j in range(3):
        y += xp[:, i:i + h, j:j + wd] @ w[i, j]
    x = np.maximum(y + b, 0.0)
    x = red(x.reshape(n, h // 2, 2, wd // 2, 2, -1), axis=(2, 4))
  feats = red(x, axis=(1, 2))
  return feats @ np.asarray(params["out_w"]).T + np.asarray(params["out_b"])


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_cnn_matches_a_numpy_reference(pool):
  cfg = tiny_model_cfg("cnn", 3, 2)
  cfg.encoder_kwargs = {"pool": pool}
  graphdef, params, model_state = models.create(cfg, (8, 8, 3), 4,
                                                jax.random.key(1))
  x = np.random.default_rng(0).normal(size=(5, 8, 8, 3)).astype(np.float32)
  got = np.asarray(models.apply(graphdef, params, model_state, x)[0])
  np.testing.assert_allclose(got, _np_cnn(params, x.astype(np.float64), pool),
                             rtol=1e-4, atol=1e-5)
