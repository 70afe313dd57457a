"""The performance paths compute the same thing as the plain ones.

"scan" run map vs "vmap"; the cond-guarded one-run step; the custom
backward passes of the dense and conv layers vs JAX's own.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtljax.core import parallel
from mtljax.core import run_map as run_map_lib
from mtljax.core import step as step_lib
from mtljax import models
from mtljax.models import encoders
from tests.helpers import fake_batch, step_setup, tiny_model_cfg, train_steps

T = 4
SHAPE = (4, 4, 3)


def _setup(run_map, encoder, seeds=(0, 1)):
  return step_setup(SHAPE, num_tasks=T, run_map=run_map, encoder=encoder,
                    seeds=seeds)


@pytest.mark.parametrize("encoder", ["mlp", "cnn"])
def test_scan_equals_vmap_with_a_nonfinite_run(encoder):
  batches = [fake_batch(i, 2, 8, SHAPE) for i in range(3)]
  batches[1]["image"][1, 0] = np.nan  # seed 1's runs skip step 1
  out = {}
  for run_map in ("vmap", "scan", "unroll"):
    s = _setup(run_map, encoder)
    out[run_map] = train_steps(s.fn, s.state, s.specs, batches, s.mesh)
  (sv, mv), (ss, ms) = out["vmap"], out["scan"]
  np.testing.assert_array_equal(mv[1]["nonfinite"], ms[1]["nonfinite"])
  assert np.asarray(ms[1]["nonfinite"])[1].all()
  assert not np.asarray(ms[1]["nonfinite"])[0].any()
  for other in ("scan", "unroll"):
    for a, b in zip(jax.tree.leaves(sv), jax.tree.leaves(out[other][0])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_single_run_step_keeps_state_when_nonfinite():
  s = _setup("vmap", "mlp", seeds=(0,))
  fn, state, specs, mesh = s.fn, s.state, s.specs, s.mesh
  specs = {k: v[:, :1] for k, v in specs.items()}
  state = jax.tree.map(lambda x: x[:, :1] if x.ndim >= 2 else x, state)
  b = fake_batch(0, 1, 8, SHAPE)
  b["image"][0, 0] = np.inf
  new, m = fn(state, specs, parallel.global_batch(b, mesh))
  assert int(np.asarray(m["nonfinite"]).sum()) == 1
  for a, o in zip(jax.tree.leaves(new.params),
                  jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, o)
  assert int(new.step) == 1


def test_scan_eval_equals_vmap_eval():
  s = _setup("vmap", "cnn")
  mesh, graphdef, params = s.mesh, s.graphdef, s.params
  images = np.random.default_rng(0).normal(size=(6,) + SHAPE).astype(
      np.float32)
  a = step_lib.make_eval_fn(graphdef, mesh, "vmap")(params, s.model_state,
                                                     images)
  b = step_lib.make_eval_fn(graphdef, mesh, "scan")(params, s.model_state,
                                                     images)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_map_runs_kinds_and_carry_agree_across_run_maps():
  rng = np.random.default_rng(0)
  w = {"a": rng.normal(size=(2, 3, 4)).astype(np.float32)}     # run
  x = rng.normal(size=(2, 5, 4)).astype(np.float32)            # seed
  c = np.float32(0.5)                                           # shared

  def one(w, x, c):
    y = x @ w["a"] + c
    return {"a": w["a"] * 2.0}, y.sum()   # the carried w first, then y

  kinds = (run_map_lib.RUN, run_map_lib.SEED, run_map_lib.SHARED)
  out = {m: run_map_lib.map_runs(one, m, kinds, carry=(0,))(w, x, c)
         for m in run_map_lib.RUN_MAPS}
  want_y = np.einsum("sbi,sgi->sg", x, w["a"]) + 5 * c
  for new_w, y in out.values():
    np.testing.assert_allclose(new_w["a"], 2 * w["a"], rtol=1e-6)
    np.testing.assert_allclose(y, want_y, rtol=1e-5)
  with pytest.raises(ValueError, match="carry"):
    run_map_lib.map_runs(one, "scan", kinds, carry=(1,))
  with pytest.raises(ValueError, match="run_map"):
    run_map_lib.map_runs(one, "pmap", kinds)


def test_default_run_map():
  cnn, mlp = models.is_convolutional("cnn"), models.is_convolutional("mlp")
  assert cnn and not mlp
  assert run_map_lib.default_run_map(cnn, "cpu") == "scan"
  assert run_map_lib.default_run_map(cnn, "gpu") == "vmap"
  assert run_map_lib.default_run_map(mlp, "cpu") == "vmap"
  assert models.is_convolutional(tiny_model_cfg("cnn"))


def _grads_close(f_custom, f_ref, *args, rtol=1e-5):
  for a, b in zip(jax.grad(f_custom, range(len(args)))(*args),
                  jax.grad(f_ref, range(len(args)))(*args)):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-5)


def test_matmul_backward_matches_jax():
  x = jax.random.normal(jax.random.key(0), (5, 7))
  w = jax.random.normal(jax.random.key(1), (7, 3))
  _grads_close(lambda x, w: jnp.sum(jnp.sin(encoders._matmul(x, w, None))),
               lambda x, w: jnp.sum(jnp.sin(x @ w)), x, w)
  # Vmapped over runs (the case the custom rule exists for).
  xs, ws = jnp.stack([x, 2 * x]), jnp.stack([w, -w])
  _grads_close(
      lambda x, w: jnp.sum(jnp.sin(jax.vmap(
          lambda a, b: encoders._matmul(a, b, None))(x, w))),
      lambda x, w: jnp.sum(jnp.sin(jnp.einsum("rbi,rio->rbo", x, w))), xs, ws)


@pytest.mark.parametrize("kernel", [(3, 3), (1, 1), (5, 3)])
def test_conv_backward_matches_jax(kernel):
  x = jax.random.normal(jax.random.key(0), (2, 6, 5, 3))
  w = jax.random.normal(jax.random.key(1), kernel + (3, 4))
  ref = lambda x, w: jnp.sum(jnp.sin(jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))))
  _grads_close(lambda x, w: jnp.sum(jnp.sin(encoders._conv(x, w, None))),
               ref, x, w)


def test_custom_layers_only_for_float32():
  # bf16 keeps JAX's own rules (XLA:CPU lacks a bf16 kernel the custom
  # weight-gradient dot would need when batched).
  x16 = jnp.ones((2, 3), jnp.bfloat16)
  w16 = jnp.ones((3, 4), jnp.bfloat16)
  jaxpr = jax.make_jaxpr(lambda x, w: encoders._dot_general(
      x, w, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32))(
          x16, w16)
  assert "custom_vjp" not in str(jaxpr)
  jaxpr = jax.make_jaxpr(lambda x, w: encoders._dot_general(
      x, w, (((1,), (0,)), ((), ()))))(x16.astype(jnp.float32),
                                       w16.astype(jnp.float32))
  assert "custom_vjp" in str(jaxpr)


@pytest.mark.parametrize("encoder,run_map", [("mlp", "vmap"), ("mlp", "scan"),
                                             ("cnn", "scan"), ("cnn", "vmap")])
def test_bf16_steps_run_in_every_run_map(encoder, run_map):
  s = step_setup(SHAPE, num_tasks=T, run_map=run_map, encoder=encoder,
                 dtype="bfloat16")
  _, m = s.fn(s.state, s.specs,
              parallel.global_batch(fake_batch(0, 2, 8, SHAPE), s.mesh))
  assert np.isfinite(np.asarray(m["loss"])).all()
  assert not np.asarray(m["nonfinite"]).any()
