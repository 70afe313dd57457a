"""The MTL architectures: shapes, the shared/per-task split, counts, rep."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mtljax import config as config_lib
from mtljax import models
from mtljax import registry
from mtljax.models import parts

SHAPE = (8, 8, 1)
T = 3
# Few experts: each is an encoder copy, and compile time grows with them.
ARCHS = {"hps": {}, "share_k": {"shared_stages": 1},
         "mmoe": {"num_experts": 2},
         "cgc": {"num_shared_experts": 1, "num_task_experts": 1},
         "cross_stitch": {}, "mtan": {}}
# Architectures with one shared representation (encode/decode).
REP_ARCHS = ("hps", "share_k", "mmoe", "cgc")


def _cfg(arch, encoder="mlp", width=4, depth=2, dropout=0.0, **arch_kwargs):
  cfg = config_lib.default_config()
  cfg.model.arch, cfg.model.encoder = arch, encoder
  cfg.model.width, cfg.model.depth, cfg.model.dropout = width, depth, dropout
  for k, v in {**ARCHS[arch], **arch_kwargs}.items():
    cfg.model.arch_kwargs[k] = v
  return cfg.model


def _tasks(sizes):
  """Stand-ins for mtljax Tasks: all that create reads is num_outputs."""
  return [types.SimpleNamespace(num_outputs=k) for k in sizes]


def _x(b=4):
  return np.random.default_rng(0).normal(size=(b,) + SHAPE).astype(np.float32)


def _leaves(tree):
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    yield tuple(getattr(k, "key", str(k)) for k in path), leaf


def _slice_mask(cls, keys, leaf, task_mask, sizes):
  """[leaf.shape[axis]] 0/1: which slices of a per-task leaf a group owns."""
  mask = np.asarray(task_mask)
  if keys[0] in getattr(cls, "output_params", ()):
    mask = np.repeat(mask, sizes)
  return mask


def _random_net(cfg, tasks):
  """(graphdef, params, state) with random parameter values, fast.

  Building the real initial values compiles every initialiser (seconds for
  the stacked encoders); what these tests check holds for any values.
  """
  graphdef = models.graphdef(cfg, SHAPE, tasks)
  shapes = jax.eval_shape(lambda k: models.create(cfg, SHAPE, tasks, k)[1:],
                          jax.random.key(0))
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda s: jnp.asarray(0.4 * rng.normal(size=s.shape), s.dtype),
      shapes[0])
  return graphdef, params, jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype),
                                        shapes[1])


def _path_keys(path):
  return tuple(getattr(k, "key", str(k)) for k in path)


@pytest.mark.parametrize("encoder", ["mlp", "cnn"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_per_task_parts_only_touch_their_tasks(arch, encoder):
  """Shapes; zero gradient outside the group; task t's parts move only t."""
  sizes = (1, 3, 2)
  graphdef, params, state = _random_net(_cfg(arch, encoder), _tasks(sizes))
  cls = registry.ARCHITECTURES.get(arch)
  x = _x()
  columns = np.repeat(np.arange(T), sizes)
  groups = np.asarray([[1, 0, 0], [0, 1, 0], [1, 0, 1]], np.float32)
  w = np.random.default_rng(1).normal(size=(4, len(columns))).astype(
      np.float32)

  def perturb(path, leaf):   # noise on task 0's own slices only
    keys = _path_keys(path)
    axis = cls.task_axis(keys)
    if axis is None:
      return leaf
    shape = [1] * leaf.ndim
    shape[axis] = -1
    own = _slice_mask(cls, keys, leaf, [1, 0, 0], sizes).reshape(shape)
    return leaf + own * np.random.default_rng(2).normal(
        size=leaf.shape).astype(leaf.dtype)

  @jax.jit
  def check(p, moved_p):
    out = models.apply(graphdef, p, state, x)[0]
    moved = models.apply(graphdef, moved_p, state, x)[0]
    # A loss that only the group's outputs enter, for each group.
    grads = jax.vmap(lambda cols: jax.grad(lambda q: jnp.sum(
        models.apply(graphdef, q, state, x)[0] * w * cols))(p))(
            groups[:, columns])
    return out, moved, grads

  out, moved, grads = check(params, jax.tree_util.tree_map_with_path(
      perturb, params))
  assert out.shape == (4, sum(sizes)) and out.dtype == jnp.float32
  assert np.isfinite(np.asarray(out)).all()
  for i, group in enumerate(groups):
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
      keys, leaf = _path_keys(path), np.asarray(leaf[i])
      axis = cls.task_axis(keys)
      if axis is None:
        continue
      own = _slice_mask(cls, keys, leaf, group, sizes)
      norms = np.abs(np.moveaxis(leaf, axis, 0)).reshape(
          leaf.shape[axis], -1).sum(1)
      assert (norms[own == 0] == 0).all(), (group, keys)
      if keys[-1] != "bias" and "_b" not in keys[0]:  # a dead ReLU's bias
        assert (norms[own == 1] > 0).any(), (group, keys)
  # Task 0's own parts leave every other task's outputs as they were, bit
  # for bit, and do move task 0's.
  np.testing.assert_array_equal(np.asarray(moved)[:, columns != 0],
                                np.asarray(out)[:, columns != 0])
  assert not np.array_equal(np.asarray(moved)[:, columns == 0],
                            np.asarray(out)[:, columns == 0])


def _mlp(n_in, n_out):
  return n_in * n_out + n_out


def _expected_mlp_counts(arch, group, sizes=(1, 1, 1), width=4, depth=2):
  """Hand counts for the MLP encoder on 8x8x1 inputs (64 features)."""
  k = int(np.sum(group))
  heads = sum(_mlp(width, s) for s, g in zip(sizes, group) if g)
  layers = [_mlp(64, width)] + [_mlp(width, width)] * (depth - 1)
  encoder = sum(layers)
  if arch == "hps":
    return encoder + heads
  if arch == "share_k":
    return sum(layers[:1]) + k * sum(layers[1:]) + heads
  if arch == "mmoe":
    return 2 * encoder + k * _mlp(64, 2) + heads          # 2 experts
  if arch == "cgc":                                     # 1 shared + 1 own
    return 1 * encoder + k * (encoder + _mlp(64, 2)) + heads
  if arch == "cross_stitch":
    # Every column's first stage is shared (the unit mixes it into every
    # task); a group owns its last stages, its rows of the unit and heads.
    return T * layers[0] + k * (layers[1] + T) + heads
  if arch == "mtan":
    att = (_mlp(width, width) * 2) + (_mlp(2 * width, width) + _mlp(width, width))
    return encoder + k * att + heads
  raise AssertionError(arch)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_group_parameter_counts_by_hand(arch):
  sizes = (1, 2, 1)
  cfg = _cfg(arch)
  for group in ([1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 1, 1]):
    assert models.count_params(cfg, SHAPE, _tasks(sizes), np.asarray(group)) \
        == _expected_mlp_counts(arch, group, sizes), group
  assert models.count_params(cfg, SHAPE, _tasks(sizes)) == \
      _expected_mlp_counts(arch, [1, 1, 1], sizes)


@pytest.mark.parametrize("encoder", ["mlp", "cnn"])
def test_share_k_spans_stl_to_hps(encoder):
  depth = 2
  x = _x()
  hps = models.create(_cfg("hps", encoder, depth=depth), SHAPE, T,
                      jax.random.key(3))
  full = models.create(_cfg("share_k", encoder, depth=depth,
                            shared_stages=depth), SHAPE, T, jax.random.key(3))
  # k = depth: the same parameters, and the same outputs bit for bit.
  jax.tree.map(np.testing.assert_array_equal, hps[1], full[1])
  np.testing.assert_array_equal(models.apply(*hps, x)[0],
                                models.apply(*full, x)[0])
  hps_cfg = _cfg("hps", encoder, depth=depth)
  stage = ([_mlp(64, 4), _mlp(4, 4)] if encoder == "mlp"
           else [9 * 1 * 4 + 4, 9 * 4 * 8 + 8])
  feat = 4 if encoder == "mlp" else 8
  for k in range(depth + 1):
    cfg = _cfg("share_k", encoder, depth=depth, shared_stages=k)
    for group in ([1, 1, 1], [0, 1, 0], [1, 0, 1]):
      n = int(sum(group))
      want = sum(stage[:k]) + n * sum(stage[k:]) + n * (feat + 1)
      assert models.count_params(cfg, SHAPE, T, np.asarray(group)) == want
  # k = 0: one task's network is exactly an HPS STL network in size.
  stl = np.eye(T)[1]
  assert (models.count_params(_cfg("share_k", encoder, shared_stages=0),
                              SHAPE, T, stl)
          == models.count_params(hps_cfg, SHAPE, T, stl))
  with pytest.raises(ValueError, match="shared_stages"):
    models.create(_cfg("share_k", encoder, shared_stages=3), SHAPE, T,
                  jax.random.key(0))


# Each architecture with a representation, each encoder and k at its ends.
REP_NETS = [("hps", "cnn", {}),
            ("share_k", "mlp", {"shared_stages": 0}),
            ("share_k", "cnn", {"shared_stages": 1}),
            ("share_k", "mlp", {"shared_stages": 2}),
            ("mmoe", "mlp", {}), ("cgc", "mlp", {})]


@pytest.mark.parametrize("arch,encoder,kw", REP_NETS)
def test_decode_of_encode_is_the_forward_pass(arch, encoder, kw):
  # Dropout (and its keys) in one case only: random bits compile slowly.
  train = (arch, encoder, kw) == REP_NETS[1]
  cfg = _cfg(arch, encoder, dropout=0.3 if train else 0.0, **kw)
  graphdef, params, state = _random_net(cfg, _tasks((1, 2, 1)))
  x, key, det = _x(), (jax.random.key(5) if train else None), not train

  def net(p):
    return nnx.merge(graphdef, p, state)

  @jax.jit
  def encode(p):
    return net(p).encode(x, rng=key, deterministic=det)

  @jax.jit
  def decode(p, rep):   # and the gradient with respect to the representation
    fn = lambda r: net(p).decode(r, rng=key, deterministic=det)
    return fn(rep), jax.grad(lambda r: jnp.sum(fn(r)))(rep)

  forward = jax.jit(lambda p: net(p)(x, rng=key, deterministic=det))
  rep = encode(params)
  out, g = decode(params, rep)
  np.testing.assert_array_equal(out, forward(params))
  # encode reads only shared parameters (zeroing every per-task one leaves
  # the representation as it was), decode only per-task ones.
  cls = registry.ARCHITECTURES.get(arch)
  shared = lambda p: cls.task_axis(_path_keys(p)) is None
  zero_own = jax.tree_util.tree_map_with_path(
      lambda p, v: v if shared(p) else 0 * v, params)
  zero_shared = jax.tree_util.tree_map_with_path(
      lambda p, v: 0 * v if shared(p) else v, params)
  np.testing.assert_array_equal(rep, encode(zero_own))
  np.testing.assert_array_equal(decode(zero_shared, rep)[0], out)
  if arch in ("mmoe", "cgc"):
    # The input packed at the end of the representation carries no gradient.
    d = math.prod(SHAPE)
    assert rep.ndim == 2 and rep.shape[1] > d
    assert not np.asarray(g[:, -d:]).any() and np.asarray(g[:, :-d]).any()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_dropout_and_bfloat16_are_honoured(arch):
  x = _x()
  cfg = _cfg(arch, "mlp", dropout=0.5)
  graphdef, params, state = _random_net(cfg, T)
  cfg.dtype = "bfloat16"
  bf16_graphdef = models.graphdef(cfg, SHAPE, T)   # the same parameters

  @jax.jit
  def outputs(p, key):
    return (models.apply(graphdef, p, state, x)[0],
            models.apply(graphdef, p, state, x, rng=key,
                         deterministic=False)[0],
            models.apply(bf16_graphdef, p, state, x)[0])

  f32, train, bf16 = outputs(params, jax.random.key(1))
  assert not np.allclose(f32, train)
  assert bf16.dtype == jnp.float32
  scale = float(np.abs(f32).max())
  np.testing.assert_allclose(bf16, f32, atol=0.05 * scale, rtol=0.05)
  assert not np.array_equal(bf16, f32)


def test_batch_norm_state_of_stacked_encoders_moves_in_training():
  cfg = _cfg("mmoe", "cnn")
  cfg.encoder_kwargs = {"norm": "batch"}
  graphdef, params, state = _random_net(cfg, T)
  assert state["experts"]["norms"][0]["mean"].shape == (2, 4)
  new = jax.jit(lambda p, s: models.apply(graphdef, p, s, _x(),
                                          deterministic=False)[1])(params, state)
  assert jax.tree.structure(new) == jax.tree.structure(state)
  assert not np.array_equal(new["experts"]["norms"][0]["mean"],
                            state["experts"]["norms"][0]["mean"])


def test_create_apply_and_counts_through_a_config():
  cfg = config_lib.default_config()
  cfg.model.arch = "mmoe"
  cfg.model.arch_kwargs.num_experts = 3
  cfg.model.width, cfg.model.depth = 4, 2
  config_lib.validate(cfg)
  graphdef, params, state = models.create(cfg.model, SHAPE, 4,
                                          jax.random.key(0))
  assert params["experts"]["convs"][0]["kernel"].shape == (3, 3, 3, 1, 4)
  assert params["gate_w"].shape == (4, 64, 3)
  apply = jax.jit(models.apply, static_argnums=0)
  out = apply(graphdef, params, state, _x())[0]
  assert out.shape == (4, 4)
  abstract = models.graphdef(cfg.model, SHAPE, 4)
  np.testing.assert_array_equal(apply(abstract, params, state, _x())[0], out)
  assert models.count_params(cfg.model, SHAPE, 4) == models.param_count(
      params, None, "mmoe")
  assert 1 <= models.matched_stl_width(cfg.model, SHAPE, 4) <= 4
  cfg.model.arch_kwargs.num_expert = 2
  with pytest.raises(config_lib.ConfigError, match="num_expert"):
    config_lib.validate(cfg)


def test_param_count_hook_wins_over_the_fraction_rule():
  class Counted(models.MultiTaskNet):
    @staticmethod
    def param_count(params, task_mask, outputs_per_task):
      return 7 if task_mask is None else int(np.sum(task_mask))

  registry.ARCHITECTURES.register("counted_test", Counted, overwrite=True)
  try:
    cfg = _cfg("hps")
    cfg.arch = "counted_test"
    assert models.count_params(cfg, SHAPE, T) == 7
    assert models.count_params(cfg, SHAPE, T, np.asarray([1, 0, 1])) == 2
  finally:
    registry.ARCHITECTURES._entries.pop("counted_test")


def test_cross_stitch_units_start_near_identity():
  m = np.asarray(parts.mixing_init(3))
  np.testing.assert_allclose(m.sum(1), 1.0)
  np.testing.assert_allclose(np.diag(m), 0.9)
  np.testing.assert_allclose(np.asarray(parts.mixing_init(1)), [[1.0]])
  assert math.isclose(float(m[0, 1]), 0.05, rel_tol=1e-6)


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "hps"])
def test_looped_copies_equal_vmapped_copies(arch, monkeypatch):
  # parts.over_copies runs a CNN's stacked copies as an unrolled loop on a
  # CPU (a vmapped convolution is a slow grouped one there). The loop must
  # compute what vmap does: logits, gradients, and the copies' BatchNorm
  # statistics, in training mode with dropout.
  cfg = _cfg(arch, "cnn", dropout=0.3)
  cfg.encoder_kwargs = {"norm": "batch"}
  graphdef, params, state = _random_net(cfg, T)
  x = _x()

  def run(how):
    monkeypatch.setattr(parts, "COPIES_MAP", how)

    def loss(p):
      logits, new = models.apply(graphdef, p, state, x, rng=jax.random.key(2),
                                 deterministic=False)
      return jnp.sum(jnp.sin(logits)), (logits, new)

    return jax.jit(jax.grad(loss, has_aux=True))(params)

  (g_v, (l_v, s_v)), (g_l, (l_l, s_l)) = run("vmap"), run("loop")
  np.testing.assert_allclose(l_l, l_v, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves((g_l, s_l)), jax.tree.leaves((g_v, s_v))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # BatchNorm statistics moved, and the gradients are not all zero.
  assert not all(np.array_equal(a, b) for a, b in
                 zip(jax.tree.leaves(s_l), jax.tree.leaves(state)))
  assert any(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(g_l))


def test_copies_map_auto_loops_only_convolutional_copies_on_cpu():
  assert jax.default_backend() == "cpu"
  cnn = types.SimpleNamespace(convolutional=True)
  assert parts._loop_copies(cnn)  # pylint: disable=protected-access
  assert not parts._loop_copies(types.SimpleNamespace())  # pylint: disable=protected-access
