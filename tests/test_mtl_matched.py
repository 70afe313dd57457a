"""The equal-compute MTL arm ("mtl_matched"): one network whose forward FLOPs
match the T single-task networks' total, trained beside MTL and STL."""

import numpy as np
import pytest

from mtljax import config as config_lib
from mtljax import models
from mtljax.core import runs


@pytest.mark.parametrize("encoder, shape", [("cnn", (16, 16, 3)),
                                            ("mlp", (8, 8, 3))])
def test_matched_width_is_the_closest_in_flops(encoder, shape):
  cfg = config_lib.default_config().model
  cfg.encoder, cfg.width, cfg.depth = encoder, 4, 2
  w = models.matched_mtl_width(cfg, shape, 4)
  eye = np.eye(4)
  target = sum(models.forward_flops(cfg, shape, 4, eye[t]) for t in range(4))

  def flops(width):
    c = cfg.copy_and_resolve_references()
    c.width = width
    return models.forward_flops(c, shape, 4)

  gap = abs(flops(w) - target)
  assert w > cfg.width
  assert gap <= abs(flops(w - 1) - target) and gap <= abs(flops(w + 1) - target)
  assert gap / target < 0.2


def test_mtl_matched_is_one_network_of_every_task_at_its_width():
  cfg = config_lib.load_config("experiments/e1_mtl_vs_stl.py:smoke",
                               ["modes=('mtl','stl','mtl_matched')"])
  progs = runs.build_programs(cfg, (32, 32, 3), 4)
  wide = [p for p in progs if any(g.arm == "mtl_matched" for g in p.groups)]
  assert len(wide) == 1 and wide[0].model_cfg.width > cfg.model.width
  (g,) = [g for g in wide[0].groups if g.arm == "mtl_matched"]
  assert g.task_mask == (1, 1, 1, 1) and g.mode == "mtl"
