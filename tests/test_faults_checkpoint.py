"""Faults: corrupt, unrestorable and foreign checkpoints.

A corrupt newest checkpoint falls back to the previous one, says so and
moves the bad one aside; none restorable or another config's: a clear error
and nothing on disk changed.
"""

import gc
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtljax.run import checkpoint as ckpt_lib
from tests.faults import *  # noqa: F401,F403 pylint: disable=wildcard-import

# When a restore fails, orbax abandons the reads of the other arrays; Python
# reports them ("Exception ignored in <coroutine ...>") when they are garbage
# collected.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")


# ----------------------------------------------------- corrupt checkpoints.


@pytest.fixture
def orbax_leftovers():
  """For tests whose restores fail: see `pytestmark`."""
  yield
  gc.collect()


def _corrupt_step(step_dir, how):
  """Damages one checkpoint step directory in one of several ways."""
  if how == "garbled_arrays":
    # The array chunks (OCDBT data files) of the "state" item.
    hit = 0
    for dirpath, _, files in os.walk(os.path.join(step_dir, "state")):
      if os.path.basename(dirpath) == "d":
        for name in files:
          _garble(os.path.join(dirpath, name))
          hit += 1
    assert hit
  elif how == "empty_meta":
    open(os.path.join(step_dir, "meta", "metadata"), "w").close()
  elif how == "state_missing":
    shutil.rmtree(os.path.join(step_dir, "state"))
  elif how == "truncated_state_metadata":
    with open(os.path.join(step_dir, "state", "_METADATA"), "r+b") as f:
      f.truncate(7)
  elif how == "emptied":
    for name in os.listdir(step_dir):
      p = os.path.join(step_dir, name)
      shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
  else:
    raise ValueError(how)


def _tiny_state(value):
  return {"w": jnp.full((4, 3), value, jnp.float32),
          "step": jnp.asarray(int(value), jnp.int32)}


def _abstract(state):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      state)


@pytest.mark.parametrize("how", ["garbled_arrays", "empty_meta",
                                 "state_missing", "truncated_state_metadata",
                                 "emptied"])
@pytest.mark.usefixtures("orbax_leftovers")
def test_corrupt_newest_checkpoint_falls_back_and_says_so(tmp_path, caplog,
                                                          how):
  d = str(tmp_path / "ckpt")
  ck = ckpt_lib.Checkpointer(d, keep=3, fingerprint="fp")
  for step in (1, 2):
    state = _tiny_state(step)
    ck.save(step, state, {"note": step})
  ck.close()
  _corrupt_step(os.path.join(d, "2"), how)

  ck = ckpt_lib.Checkpointer(d, keep=3, fingerprint="fp")
  with caplog.at_level(logging.WARNING):
    restored, meta = ck.restore_latest(_abstract(state))
  assert meta["step"] == 1 and meta["note"] == 1
  np.testing.assert_array_equal(np.asarray(restored["w"]), 1.0)
  warning = " ".join(r.getMessage() for r in caplog.records)
  assert "step(s) 2 could not be restored" in warning
  assert "resuming from the previous good checkpoint, step 1" in warning
  # Kept for inspection, out of orbax's way: step 2 can be saved again.
  assert sorted(os.listdir(d)) == ["1", "2.corrupt"]
  state2 = _tiny_state(7)
  ck.save(2, state2, {"note": 2})
  restored, meta = ck.restore_latest(_abstract(state))
  assert meta["step"] == 2
  np.testing.assert_array_equal(np.asarray(restored["w"]), 7.0)
  ck.close()


@pytest.mark.usefixtures("orbax_leftovers")
def test_no_restorable_checkpoint_is_an_error_and_changes_nothing(tmp_path):
  d = str(tmp_path / "ckpt")
  ck = ckpt_lib.Checkpointer(d, keep=3, fingerprint="fp")
  for step in (1, 2):
    state = _tiny_state(step)
    ck.save(step, state, {})
  ck.close()
  _corrupt_step(os.path.join(d, "1"), "garbled_arrays")
  _corrupt_step(os.path.join(d, "2"), "empty_meta")
  before = _snapshot(d)
  ck = ckpt_lib.Checkpointer(d, keep=3, fingerprint="fp")
  with pytest.raises(ckpt_lib.CheckpointError,
                     match=r"no checkpoint .* could be restored") as e:
    ck.restore_latest(_abstract(state))
  assert "step 2:" in str(e.value) and "step 1:" in str(e.value)
  assert _snapshot(d) == before


@pytest.mark.usefixtures("orbax_leftovers")
def test_checkpoint_of_another_model_shape_is_an_error(tmp_path):
  """Same fingerprint, other shapes (e.g. the model code changed)."""
  d = str(tmp_path / "ckpt")
  ck = ckpt_lib.Checkpointer(d, keep=3, fingerprint="fp")
  ck.save(1, _tiny_state(1), {})
  ck.close()
  before = _snapshot(d)
  wider = dict(_tiny_state(1), w=jnp.zeros((8, 3), jnp.float32))
  ck = ckpt_lib.Checkpointer(d, keep=3, fingerprint="fp")
  with pytest.raises(ckpt_lib.CheckpointError,
                     match=r"step 1: ValueError: .*\(8, 3\).*\(4, 3\)"):
    ck.restore_latest(_abstract(wider))
  assert _snapshot(d) == before


def test_checkpoint_of_another_config_names_the_fields(tmp_path):
  d = str(tmp_path / "ckpt")
  state = _tiny_state(1)
  ck = ckpt_lib.Checkpointer(d, keep=3, fingerprint="a", config={
      "model.width": 8, "model.depth": 2, "modes": ("mtl",)})
  ck.save(1, state, {})
  ck.close()
  before = _snapshot(d)
  ck = ckpt_lib.Checkpointer(d, keep=3, fingerprint="b", config={
      "model.width": 32, "model.depth": 2, "modes": ("mtl",)})
  with pytest.raises(ckpt_lib.CheckpointError,
                     match=r"config\.model\.width=32 here but 8 in the "
                     r"checkpoint") as e:
    ck.restore_latest(_abstract(state))
  assert "depth" not in str(e.value) and "modes" not in str(e.value)
  assert _snapshot(d) == before


@pytest.mark.usefixtures("orbax_leftovers")
def test_corrupt_newest_checkpoint_end_to_end(baseline, rerun, tmp_path):
  wd = str(tmp_path / "run")
  shutil.copytree(baseline, wd)
  os.remove(os.path.join(wd, "results.json"))
  _corrupt_step(os.path.join(wd, "checkpoints", "6"), "garbled_arrays")
  logs = rerun(wd)
  assert "resuming from the previous good checkpoint, step 3" in logs
  assert "from step 3" in logs
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == [
      "3", "6", "6.corrupt"]
  _assert_same_run(wd, baseline)
