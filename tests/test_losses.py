"""The masked loss against an independent numpy implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtljax.tasks import losses


def np_logistic(z, y):
  # Direct definition with float64 log-sigmoids (independent of the jax form).
  z = z.astype(np.float64)
  log_p = -np.logaddexp(0.0, -z)
  log_1mp = -np.logaddexp(0.0, z)
  return -(y * log_p + (1 - y) * log_1mp)


def np_loss(z, y, m, normalize):
  b, t = z.shape
  total, count = 0.0, 0
  per_task_sum, per_task_n = np.zeros(t), np.zeros(t)
  for i in range(b):
    for j in range(t):
      if m[i, j]:
        l = np_logistic(z[i, j:j + 1], y[i, j])[0]
        total += l
        count += 1
        per_task_sum[j] += l
        per_task_n[j] += 1
  if normalize == "per_example":
    return total / b
  if normalize == "per_label":
    return total / max(count, 1)
  present = per_task_n > 0
  if not present.any():
    return 0.0
  return np.mean(per_task_sum[present] / per_task_n[present])


def random_case(seed, b=7, t=4, p_obs=0.6):
  rng = np.random.default_rng(seed)
  z = rng.normal(0, 3, (b, t)).astype(np.float32)
  y = rng.integers(0, 2, (b, t)).astype(np.float32)
  m = rng.random((b, t)) < p_obs
  m[:, 1] = False  # an all-masked task
  return z, y, m


@pytest.mark.parametrize("normalize", losses.NORMALIZATIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy(normalize, seed):
  z, y, m = random_case(seed)
  got = losses.masked_sigmoid_cross_entropy(z, y, m, normalize)
  np.testing.assert_allclose(got, np_loss(z, y, m, normalize), rtol=1e-5)


@pytest.mark.parametrize("normalize", losses.NORMALIZATIONS)
def test_all_masked_batch_is_zero_and_finite(normalize):
  z, y, _ = random_case(3)
  m = np.zeros_like(z, bool)
  loss, grad = jax.value_and_grad(losses.masked_sigmoid_cross_entropy)(
      jnp.asarray(z), y, m, normalize)
  assert float(loss) == 0.0
  assert np.all(np.asarray(grad) == 0.0)


def test_per_task_vector():
  z, y, m = random_case(4)
  got = np.asarray(losses.masked_sigmoid_cross_entropy_per_task(z, y, m))
  for j in range(z.shape[1]):
    sel = m[:, j]
    want = np_logistic(z[sel, j], y[sel, j]).mean() if sel.any() else 0.0
    np.testing.assert_allclose(got[j], want, rtol=1e-5)


@pytest.mark.parametrize("normalize", losses.NORMALIZATIONS)
def test_unobserved_gradient_is_exactly_zero(normalize):
  z, y, m = random_case(5)
  z[~m] = 1e4 * np.sign(z[~m])  # extreme values must not leak either
  g = jax.grad(losses.masked_sigmoid_cross_entropy)(jnp.asarray(z), y, m,
                                                     normalize)
  g = np.asarray(g)
  assert np.all(g[~m] == 0.0)
  assert np.all(g[m] != 0.0)


@pytest.mark.parametrize("scale", [1e2, 1e4])
def test_extreme_logits_finite(scale):
  z = np.array([[scale, -scale], [-scale, scale]], np.float32)
  y = np.array([[0, 1], [1, 0]], np.float32)  # maximally wrong
  m = np.ones_like(z, bool)
  loss, g = jax.value_and_grad(losses.masked_sigmoid_cross_entropy)(
      jnp.asarray(z), y, m)
  assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(g)))
  np.testing.assert_allclose(float(loss), 2 * scale, rtol=1e-5)


@pytest.mark.parametrize("bad, match", [
    (dict(logits=np.zeros((4,), np.float32)), "logits must have rank 2"),
    (dict(labels=np.zeros((4, 3), np.float32)), "labels shape"),
    (dict(mask=np.ones((4, 2), np.float32)), "mask must be bool"),
    (dict(mask=np.ones((5, 2), bool)), "mask shape"),
    (dict(logits=np.zeros((4, 2), np.int32)), "logits must be floating"),
])
def test_bad_inputs_raise_naming_argument(bad, match):
  args = dict(logits=np.zeros((4, 2), np.float32),
              labels=np.zeros((4, 2), np.float32),
              mask=np.ones((4, 2), bool))
  args.update(bad)
  with pytest.raises(ValueError, match=match):
    losses.masked_sigmoid_cross_entropy(**args)
  with pytest.raises(ValueError, match="normalize"):
    losses.masked_sigmoid_cross_entropy(
        np.zeros((4, 2), np.float32), np.zeros((4, 2)), np.ones((4, 2), bool),
        "mean")


@pytest.mark.parametrize("fn", [losses.masked_sigmoid_cross_entropy,
                                losses.masked_sigmoid_cross_entropy_per_task])
@pytest.mark.parametrize("bad_label", [-1.0, 2.0, 0.5, np.nan])
def test_observed_label_outside_0_1_raises_with_position(fn, bad_label):
  z, y, _ = random_case(6)
  m = np.ones_like(z, bool)  # all observed: a stored "?" (-1) is then a bug
  y[3, 2] = bad_label
  with pytest.raises(ValueError, match=r"example 3, task 2") as e:
    fn(z, y, m)
  assert str(bad_label) in str(e.value)
  # The same value under mask=False is ignored, and bool/int labels pass.
  m[3, 2] = False
  fn(z, y, m)
  fn(z, y.astype(bool), np.ones_like(m))
  fn(z, np.where(m, y, 0).astype(np.int32), np.ones_like(m))


def test_label_check_skipped_when_traced():
  # Under jit the values are unknown: no error, and the loss still runs.
  z, y, _ = random_case(7)
  m = np.ones_like(z, bool)
  y[0, 0] = -1.0
  got = jax.jit(losses.masked_sigmoid_cross_entropy)(z, y, m)
  assert np.isfinite(float(got))


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("normalize", losses.NORMALIZATIONS)
def test_nan_and_inf_under_mask_do_not_leak(normalize, jit):
  z, y, m = random_case(8)
  fn = jax.value_and_grad(losses.masked_sigmoid_cross_entropy)
  fn = jax.jit(fn, static_argnums=3) if jit else fn
  clean, _ = fn(jnp.asarray(z), y, m, normalize)
  (i1, j1), (i2, j2), (i3, j3) = np.argwhere(~m)[:3]
  y[i1, j1], y[i2, j2], y[i3, j3] = np.nan, -1.0, np.nan
  z[i1, j1], z[i2, j2], z[i3, j3] = np.nan, np.inf, -np.inf
  loss, g = fn(jnp.asarray(z), y, m, normalize)
  g = np.asarray(g)
  assert np.isfinite(float(loss)) and np.all(np.isfinite(g))
  assert float(loss) == float(clean)
  assert np.all(g[~m] == 0.0)
  per_task = losses.masked_sigmoid_cross_entropy_per_task
  jac = np.asarray(jax.jacrev(per_task)(jnp.asarray(z), y, m))
  assert np.all(np.isfinite(jac)) and np.all(jac[:, ~m] == 0.0)


@pytest.mark.parametrize("normalize", losses.NORMALIZATIONS)
def test_empty_batch_is_zero_with_zero_gradient(normalize):
  y, m = np.zeros((0, 3), np.float32), np.zeros((0, 3), bool)

  def loss(bias):  # a parameter that exists even when the batch is empty
    logits = jnp.zeros((0, 3), jnp.float32) + bias
    return losses.masked_sigmoid_cross_entropy(logits, y, m, normalize)

  for fn in (jax.value_and_grad(loss), jax.jit(jax.value_and_grad(loss))):
    value, g = fn(jnp.float32(0.5))
    assert float(value) == 0.0 and float(g) == 0.0
  per_task = losses.masked_sigmoid_cross_entropy_per_task(
      jnp.zeros((0, 3), jnp.float32), y, m)
  np.testing.assert_array_equal(np.asarray(per_task), np.zeros(3))
