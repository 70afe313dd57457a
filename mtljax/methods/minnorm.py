"""The Gramian-based aggregators: MGDA (and MGDA-UB), UPGrad, DualProj.

Their solvers live in `gramian.py`; each function here is
`fn(grads [T, P], *, mask=None, **hparams) -> [P]` like every aggregator
(registered by `aggregators.py`), jitted with its options static.
"""

from __future__ import annotations

import jax.numpy as jnp

from mtljax.methods import gramian as gm

_jit = gm.jit

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def _normalizers(grads, losses, normalize, m):
  """Sener & Koltun's gradient normalisers [T] (1 for "none").

  "l2": ||g_t||; "loss": L_t; "loss+": L_t ||g_t|| (their official code's
  `gradient_normalizers`). Absent tasks get 1 (their rows are zero anyway).
  """
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"normalize must be one of {NORMALIZATIONS}; got "
                     f"{normalize!r}")
  one = jnp.ones((grads.shape[0],), grads.dtype)
  if normalize == "none":
    return one
  if normalize != "l2" and losses is None:
    raise ValueError(f"MGDA's normalize={normalize!r} needs the task losses "
                     f"(losses=)")
  nrm = jnp.sqrt(jnp.sum(grads * grads, axis=1))
  if normalize == "l2":
    n = nrm
  else:
    loss = jnp.where(m, jnp.asarray(losses, grads.dtype), 1)
    n = loss if normalize == "loss" else loss * nrm
  return jnp.where(m, n, one)


@gm.jit(static=("iters", "normalize"))
def mgda(grads, iters: int = 500, mask=None, losses=None,
         normalize: str = "none"):
  """MGDA (Desideri 2012; Sener & Koltun 2018): the minimum-norm point of the
  convex hull of the task gradients, sum_i alpha_i g_i with alpha on the
  simplex (of the present tasks).

  `normalize` ("none", "l2", "loss", "loss+"; Sener & Koltun's gradient
  normalisation, LibMTL's mgda_gn): alpha is solved on g_t / n_t with n_t
  = ||g_t||, L_t or L_t ||g_t|| (`losses` needed for the loss variants; a
  zero normaliser leaves its row zero), and, as in Sener & Koltun's official
  code, applied to the UNnormalised gradients (LibMTL instead returns
  sum_t alpha_t g_t / n_t).

  Scale: a convex combination (mean scale; one task gives g exactly).
  """
  m = gm.present(mask, grads.shape[0])
  grads = gm.mask_rows(jnp.asarray(grads), m)
  n = _normalizers(grads, losses, normalize, m)
  if grads.shape[0] == 1:
    return grads[0]  # alpha = 1 on a one-point simplex (no solver to compile)
  ok = n > 0
  normed = grads * jnp.where(ok, 1 / jnp.where(ok, n, 1), 0)[:, None]
  alpha = gm.min_norm_weights(gm.gramian(normed), iters, m)
  return alpha.astype(grads.dtype) @ grads


def _mgda_ub(grads, iters: int = 500, mask=None, losses=None,
             normalize: str = "none"):
  """MGDA-UB (Sener & Koltun 2018): MGDA on the gradients of the shared
  REPRESENTATION instead of the shared parameters (an upper bound of the
  MGDA objective that needs one backward pass through the encoder).

  The math is `mgda`'s; `mgda_ub.representation = True` tells the train
  step to hand it the representation gradients [T, B * D].
  """
  del grads, iters, mask, losses, normalize  # documentation only


# The same jitted program as mgda (shared compilations), under its own name.
mgda_ub = gm.jit(mgda, signature=_mgda_ub)
mgda_ub.representation = True


@_jit
def upgrad(grads, pref=None, iters: int = 500, mask=None):
  """UPGrad (Quinton & Rey 2024, TorchJD): each task gradient projected onto
  the dual cone {d : g_i . d >= 0 for all i}, combined with weights `pref`
  (default 1/T' over the T' present tasks, i.e. the mean of the
  projections). Scale: mean (with the default pref; one task gives g
  exactly). The direction has a non-negative inner product with every task
  gradient.
  """
  m = gm.present(mask, grads.shape[0])
  grads = gm.mask_rows(jnp.asarray(grads), m)
  if grads.shape[0] == 1 and pref is None:
    return grads[0]  # g is in its own dual cone
  w = gm.upgrad_weights(gm.gramian(grads), pref, iters, m)
  return w.astype(grads.dtype) @ grads


@_jit
def dualproj(grads, pref=None, iters: int = 500, mask=None):
  """DualProj (Lopez-Paz & Ranzato 2017, Eq. 11; TorchJD): the pref-weighted
  combination of the task gradients (default 1/T' over the present tasks:
  the mean) projected onto the dual cone {d : g_i . d >= 0 for all i}.
  Scale: mean (with the default pref; one task gives g exactly).
  """
  m = gm.present(mask, grads.shape[0])
  grads = gm.mask_rows(jnp.asarray(grads), m)
  if grads.shape[0] == 1 and pref is None:
    return grads[0]  # g is in its own dual cone
  w = gm.dualproj_weights(gm.gramian(grads), pref, iters, m)
  return w.astype(grads.dtype) @ grads


__all__ = ["NORMALIZATIONS", "mgda", "mgda_ub", "upgrad", "dualproj"]
