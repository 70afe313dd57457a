"""Tiny models, fake batches and configs shared by the tests."""

import numpy as np

from mtljax import config as config_lib


def tiny_model_cfg(encoder="mlp", width=8, depth=2, dropout=0.0):
  m = config_lib.default_config().model
  m.encoder, m.width, m.depth, m.dropout = encoder, width, depth, dropout
  return m


def fake_batch(seed, s, b, image_shape=(2, 2, 3), t=4, p_obs=0.7):
  rng = np.random.default_rng(seed)
  return {
      "image": rng.normal(size=(s, b) + tuple(image_shape)).astype(np.float32),
      "labels": rng.integers(0, 2, (s, b, t)).astype(np.float32),
      "mask": rng.random((s, b, t)) < p_obs,
  }
