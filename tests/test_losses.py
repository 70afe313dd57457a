"""The masked loss against an independent numpy implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtljax import losses


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
