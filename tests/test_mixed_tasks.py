"""Binary, multiclass and regression tasks together, from register_arrays.

The losses are checked against independent numpy references, the gradient
of every "?" entry is exactly 0 (whatever it stores), the heads are sized
per task, and a network trains end to end on all three types from arrays.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtljax
from mtljax import models
from mtljax.core import step as step_lib
from mtljax.tasks import losses
from mtljax.tasks import types

TASKS = (types.Binary("cat"), types.Multiclass("digit", num_classes=5),
         types.Regression("age"), types.Regression("h", loss="huber",
                                                   delta=0.5),
         types.Binary("dog"), types.Regression("l", loss="l1"))


# ------------------------------------------------------------ references.
def np_elementwise(out, y, m, tasks):
  """Per-label losses [B, T], written independently of losses.py."""
  out = np.asarray(out, np.float64)
  b = out.shape[0]
  res = np.zeros((b, len(tasks)))
  col = 0
  for t, task in enumerate(tasks):
    for i in range(b):
      if not m[i, t]:
        continue
      if task.type == "binary":
        z, lab = out[i, col], y[i, t]
        p = 1 / (1 + np.exp(-z))
        res[i, t] = -(lab * np.log(p) + (1 - lab) * np.log(1 - p))
      elif task.type == "multiclass":
        z = out[i, col:col + task.num_classes]
        logp = z - z.max() - np.log(np.exp(z - z.max()).sum())
        res[i, t] = -logp[int(y[i, t])]
      else:
        r = out[i, col] - y[i, t]
        if task.loss == "mse":
          res[i, t] = r * r
        elif task.loss == "l1":
          res[i, t] = abs(r)
        else:
          d = task.delta
          res[i, t] = 0.5 * r * r if abs(r) <= d else d * (abs(r) - 0.5 * d)
    col += task.num_outputs
  return res


def random_case(seed, b=9, tasks=TASKS, p_obs=0.7):
  rng = np.random.default_rng(seed)
  o = sum(t.num_outputs for t in tasks)
  out = rng.normal(size=(b, o)).astype(np.float32) * 2
  y = np.zeros((b, len(tasks)), np.float32)
  for t, task in enumerate(tasks):
    if task.type == "binary":
      y[:, t] = rng.integers(0, 2, b)
    elif task.type == "multiclass":
      y[:, t] = rng.integers(0, task.num_classes, b)
    else:
      y[:, t] = rng.normal(size=b)
  m = rng.random((b, len(tasks))) < p_obs
  return out, y, m


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("normalize", ["per_example", "per_label",
                                       "per_task"])
def test_typed_losses_match_numpy(seed, normalize):
  out, y, m = random_case(seed)
  elem = np_elementwise(out, y, m, TASKS)
  got_elem = losses.task_elementwise(out, y, m, TASKS)
  np.testing.assert_allclose(got_elem, elem, rtol=2e-5, atol=2e-6)
  loss, per_task = losses.task_losses(out, y, m, TASKS, normalize)
  count = m.sum(0)
  want_per_task = elem.sum(0) / np.maximum(count, 1)
  np.testing.assert_allclose(per_task, want_per_task, rtol=2e-5, atol=2e-6)
  if normalize == "per_example":
    want = elem.sum() / len(out)
  elif normalize == "per_label":
    want = elem.sum() / max(m.sum(), 1)
  else:
    want = want_per_task[count > 0].mean()
  np.testing.assert_allclose(loss, want, rtol=2e-5, atol=2e-6)


def test_all_binary_tasks_are_the_lecture_loss_bit_for_bit():
  tasks = tuple(types.Binary(f"t{i}") for i in range(4))
  out, y, m = random_case(1, tasks=tasks)
  for normalize in ("per_example", "per_label", "per_task"):
    a = losses.task_losses(out, y, m, tasks, normalize)[0]
    b = losses.masked_sigmoid_cross_entropy(out, y, m, normalize)
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


@pytest.mark.parametrize("jit", [False, True])
def test_missing_entries_have_exactly_zero_gradient(jit):
  out, y, m = random_case(2)
  # "?" as each type stores it, plus garbage that must not leak: NaN and inf
  # in the labels and in the outputs of unobserved entries.
  y = y.copy()
  for t, task in enumerate(TASKS):
    y[~m[:, t], t] = np.nan if task.type == "regression" else -1
  y[0, :] = [np.inf, 99, np.nan, -np.inf, 7, np.nan]
  m[0, :] = False
  table = types.output_table(TASKS)
  out = out.copy()
  out[0, :] = np.nan  # every output of example 0, whose labels are all "?"
  fn = lambda o: losses.task_losses(o, y, m, TASKS, "per_example")[0]
  grad_fn = jax.jit(jax.grad(fn)) if jit else jax.grad(fn)
  loss = (jax.jit(fn) if jit else fn)(jnp.asarray(out))
  g = np.asarray(grad_fn(jnp.asarray(out)))
  assert np.isfinite(loss) and np.isfinite(g).all()
  observed_col = m[:, table]  # [B, O]: each output's task observed?
  assert (g[~observed_col] == 0).all()
  assert (np.abs(g[observed_col]) > 0).any()
  # The value ignores the garbage: it equals the loss with clean zeros there.
  clean = np.where(observed_col, out, 0)
  np.testing.assert_allclose(loss, fn(jnp.asarray(clean)), rtol=1e-6)


def test_bad_labels_name_the_task_and_value():
  out, y, m = random_case(3)
  y[2, 1], m[2, 1] = 5, True  # class 5 of a 5-way task
  with pytest.raises(ValueError, match=r"label value 5 at example 2, task "
                     r"'digit' \(multiclass\)"):
    losses.task_losses(out, y, m, TASKS)
  out, y, m = random_case(3)
  y[1, 2], m[1, 2] = np.inf, True
  with pytest.raises(ValueError, match=r"label value inf .*task 'age'"):
    losses.task_losses(out, y, m, TASKS)
  out, y, m = random_case(3)
  y[4, 2], m[4, 2] = np.nan, True
  with pytest.raises(ValueError, match=r"task 'age' .*'\?' but mask is True"):
    losses.task_losses(out, y, m, TASKS)
  with pytest.raises(ValueError, match=r"labels must have shape \[batch, 6\]"):
    losses.task_losses(out, y[:, :5], m, TASKS)


def test_heads_are_sized_per_task_in_one_matmul():
  cfg = mtljax.default_config().model
  cfg.encoder, cfg.width, cfg.depth = "mlp", 8, 1
  g, params, state = models.create(cfg, (4, 4, 1), TASKS, jax.random.key(0))
  o = sum(t.num_outputs for t in TASKS)
  assert params["out_w"].shape == (o, 8)
  logits, _ = models.apply(g, params, state, jnp.zeros((3, 4, 4, 1)))
  assert logits.shape == (3, o)
  # A task's network owns its own output columns: the digit task's STL
  # network has 5 output rows, the cat task's one.
  enc = models.count_params(cfg, (4, 4, 1), TASKS, np.zeros(len(TASKS)))
  digit = models.count_params(cfg, (4, 4, 1), TASKS, np.eye(len(TASKS))[1])
  cat = models.count_params(cfg, (4, 4, 1), TASKS, np.eye(len(TASKS))[0])
  assert digit - enc == 5 * (8 + 1) and cat - enc == 8 + 1
  assert models.count_params(cfg, (4, 4, 1), TASKS) - enc == o * 9


def test_negative_policy_only_unmasks_binary_tasks():
  _, y, m = random_case(4)
  is_binary = np.array([t.type == "binary" for t in TASKS])
  _, eff, _ = step_lib.apply_missing_policy(y, m, "negative", is_binary)
  eff = np.asarray(eff)
  assert eff[:, is_binary].all()
  np.testing.assert_array_equal(eff[:, ~is_binary], m[:, ~is_binary])


# ------------------------------------------------------------ end to end.
def _arrays(n, rng):
  """Images whose pixels carry every label: learnable in a few steps."""
  x = rng.integers(0, 256, (n, 6, 6, 1)).astype(np.uint8)
  f = x.reshape(n, -1).astype(np.float64) / 255
  cat = (f[:, :6].mean(1) > 0.5).astype(float)
  digit = np.minimum((f[:, 6:12].mean(1) * 4).astype(int), 3).astype(float)
  age = (f[:, 12:18].mean(1) - 0.5) * 8  # centred: no bias to learn first
  y = np.stack([cat, digit, age], axis=1)
  missing = rng.random(y.shape) < 0.2
  y[missing[:, 0], 0] = -1
  y[missing[:, 1], 1] = -1
  y[missing[:, 2], 2] = np.nan
  return x, y


def test_trains_binary_multiclass_and_regression_from_arrays(tmp_path):
  rng = np.random.default_rng(0)
  splits = {s: _arrays(n, rng) for s, n in (("train", 256), ("validation", 64),
                                            ("test", 64))}
  spec = mtljax.data.register_arrays(
      "mixed_arrays", splits=splits,
      tasks=[mtljax.tasks.Binary("cat"),
             mtljax.tasks.Multiclass("digit", num_classes=4),
             mtljax.tasks.Regression("age")])
  assert spec.task_types == ("binary", "multiclass", "regression")
  c = mtljax.default_config()
  c.data.name, c.data.data_dir = "mixed_arrays", str(tmp_path / "data")
  c.model.encoder, c.model.width, c.model.depth = "mlp", 16, 1
  c.modes, c.num_seeds = ("mtl", "stl"), 2
  c.train.steps, c.train.batch_size = 60, 32
  c.train.eval_every, c.train.log_every = 30, 30
  c.train.checkpoint_every, c.train.progress = 60, "none"
  c.optimizer.learning_rates = (3e-3,)
  results = mtljax.train_and_evaluate(c, str(tmp_path / "w"))
  assert results["selection_metric"] == "primary"
  assert [t["type"] for t in results["dataset"]["tasks"]] == [
      "binary", "multiclass", "regression"]
  for r in results["runs"]:
    pt = r["test"]["per_task"]
    assert set(pt["cat"]) == {"auc", "ap", "acc", "loss"}
    assert set(pt["digit"]) == {"acc", "macro_f1", "loss"}  # K = 4: no top-5
    assert set(pt["age"]) == {"r2", "mse", "mae"}
    # Learned something on every type (chance: AUC 0.5, acc 0.25, R² <= 0).
    assert pt["cat"]["auc"] > 0.7, r
    assert pt["digit"]["acc"] > 0.35, r
    assert pt["age"]["r2"] > 0.0, r
    np.testing.assert_allclose(
        r["test"]["mean"]["primary"],
        np.mean([pt["cat"]["auc"], pt["digit"]["acc"], pt["age"]["r2"]]))
  with open(tmp_path / "w" / "results.json") as f:
    assert json.load(f)["runs"][0]["test"]["per_task"].keys() == {
        "cat", "digit", "age"}
  model = mtljax.load_model(tmp_path / "w", arm="mtl", seed=0)
  pred = model.predict(splits["test"][0][:5])
  assert pred["cat"].shape == (5,) and pred["age"].shape == (5,)
  assert pred["digit"].shape == (5, 4)
  np.testing.assert_allclose(pred["digit"].sum(1), 1.0, rtol=1e-9)


def test_negative_policy_on_a_regression_task_is_a_config_error(tmp_path):
  rng = np.random.default_rng(1)
  splits = {s: _arrays(64, rng) for s in ("train", "validation", "test")}
  mtljax.data.register_arrays(
      "mixed_arrays_2", splits=splits,
      tasks=[mtljax.tasks.Binary("cat"),
             mtljax.tasks.Multiclass("digit", num_classes=4),
             mtljax.tasks.Regression("age")])
  c = mtljax.default_config()
  c.data.name, c.data.data_dir = "mixed_arrays_2", str(tmp_path / "data")
  c.model.encoder, c.train.steps, c.train.batch_size = "mlp", 2, 16
  c.train.eval_every = 2
  c.loss.missing_policies = ("mask", "negative")
  with pytest.raises(mtljax.config.ConfigError,
                     match=r"'negative'.*task 'digit' \(multiclass"):
    mtljax.train_and_evaluate(c, str(tmp_path / "w"))
  c.loss.missing_policies = ("mask",)
  c.train.selection_metric = "auc"
  with pytest.raises(mtljax.config.ConfigError,
                     match=r"selection_metric='auc' is not a metric of task "
                     r"'digit'"):
    mtljax.train_and_evaluate(c, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_a_workdir_is_not_resumed_on_other_arrays_under_the_same_name(
    tmp_path):
  rng = np.random.default_rng(2)
  splits = {s: _arrays(64, rng) for s in ("train", "validation", "test")}
  tasks = [mtljax.tasks.Binary("cat"),
           mtljax.tasks.Multiclass("digit", num_classes=4),
           mtljax.tasks.Regression("age")]
  mtljax.data.register_arrays("mixed_arrays_3", splits=splits, tasks=tasks)
  c = mtljax.default_config()
  c.data.name, c.data.data_dir = "mixed_arrays_3", str(tmp_path / "data")
  c.model.encoder, c.modes = "mlp", ("mtl",)
  c.train.steps, c.train.batch_size, c.train.eval_every = 4, 16, 2
  c.train.checkpoint_every, c.train.progress = 2, "none"
  first = mtljax.train_and_evaluate(c, str(tmp_path / "w"))
  assert first["config"]["data"]["version"].startswith("h")
  # One label changed: a new build, and the old workdir is not its own.
  splits["train"][1][0, 0] = 1 - splits["train"][1][0, 0]
  mtljax.data.register_arrays("mixed_arrays_3", splits=splits, tasks=tasks)
  with pytest.raises(mtljax.config.ConfigError,
                     match=r"config\.data\.version='h.*' here but 'h.*' in"):
    mtljax.train_and_evaluate(c, str(tmp_path / "w"))


CONFIG_FILE = '''
"""A config file that registers its own arrays (as a user's would)."""
import numpy as np
from sklearn.datasets import load_digits

import mtljax

digits = load_digits()
x = digits.images[..., None]
y = np.stack([digits.target % 2, digits.target], axis=1).astype(np.float32)
y[::7, 1] = -1
mtljax.data.register_arrays(
    "file_digits",
    splits={"train": (x[:1000], y[:1000]), "validation": (x[1000:1300], y[1000:1300]),
            "test": (x[1300:], y[1300:])},
    tasks=[mtljax.tasks.Binary("odd"), mtljax.tasks.Multiclass("digit", num_classes=10)],
    image_range=(0, 16))


def get_config(arg=None):
  c = mtljax.default_config()
  c.data.name = "file_digits"
  c.model.encoder, c.model.width, c.model.depth = "mlp", 16, 1
  c.modes, c.num_seeds = ("mtl", "stl"), 1
  c.train.steps, c.train.batch_size, c.train.eval_every = 6, 32, 3
  c.train.checkpoint_every = 3
  return c
'''


def test_a_config_file_that_registers_arrays_trains_through_the_cli(
    tmp_path, monkeypatch):
  from mtljax import cli  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(cli, "_setup_logging", lambda verbose=False: None)
  monkeypatch.setenv("MTLJAX_COMPILATION_CACHE", "")
  path = tmp_path / "my_arrays.py"
  path.write_text(CONFIG_FILE)
  wd = tmp_path / "w"
  argv = ["train", "--config", str(path), "--workdir", str(wd),
          "--config.train.progress=none",
          f"--config.data.data_dir={tmp_path / 'data'}"]
  assert cli.main(argv) == 0
  with open(wd / "results.json") as f:
    results = json.load(f)
  assert [t["type"] for t in results["dataset"]["tasks"]] == ["binary",
                                                              "multiclass"]
  assert {r["arm"] for r in results["runs"]} == {"mtl", "stl"}
  # The same file again: the same content hash, so the finished workdir is
  # its own (nothing rebuilt, nothing refused).
  assert cli.main(argv) == 0
