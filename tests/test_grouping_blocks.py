"""The grouping search finds known structure (the issue's "done when").

Four tasks in two blocks: a1 = a2 (the same labels) and b1 = b2, with a and b
independent (thresholds of disjoint halves of random pixels). The network is
a one-unit MLP, too small to learn a and b together, so a group holding both
blocks loses on one of them. The exhaustive search over all 15 trained
groups, Standley's pair estimate and TAG's lookahead affinity must each
choose {a1, a2} · {b1, b2} for two networks, and TAG's affinity must be
positive within the blocks and negative between them.
"""

import numpy as np

import mtljax
from mtljax import config as config_lib
from mtljax.analysis import report
from mtljax.run import train
from mtljax.tasks import Binary


def _blocks(seed=0, sizes=(3000, 600, 600)):
  rng = np.random.default_rng(seed)
  out = {}
  for split, m in zip(("train", "validation", "test"), sizes):
    x = rng.integers(0, 256, (m, 4, 4, 1)).astype(np.uint8)
    f = x.reshape(m, -1).astype(np.float64)
    a = (f[:, :8].sum(1) > 8 * 127.5).astype(np.float32)
    b = (f[:, 8:].sum(1) > 8 * 127.5).astype(np.float32)
    out[split] = (x, np.stack([a, a, b, b], 1))
  return out


def test_exhaustive_pairs_and_tag_find_the_two_blocks(tmp_path):
  mtljax.data.register_arrays("grouping_blocks", _blocks(),
                              [Binary(n) for n in ("a1", "a2", "b1", "b2")])
  c = config_lib.default_config()
  c.data.name, c.data.data_dir = "grouping_blocks", str(tmp_path / "tfds")
  c.model.encoder, c.model.width, c.model.depth = "mlp", 1, 1
  c.num_seeds = 3
  c.train.steps, c.train.eval_every, c.train.checkpoint_every = 300, 100, 300
  c.train.batch_size, c.train.progress = 64, "none"
  c.optimizer.learning_rates = (1e-2,)
  c.grouping.groups, c.grouping.affinity_every = "all", 5
  res = train.train_and_evaluate(c, str(tmp_path / "w"))
  g = report.summarize([res])["conditions"][0]["grouping"]
  assert g["complete"] and g["num_trained"] == 15
  assert g["methods"] == ["exhaustive", "pairs", "affinity"]
  two = g["by_networks"][1]
  for method in g["methods"]:
    assert two[method]["groups"] == [["a1", "a2"], ["b1", "b2"]], method
    assert two[method]["regret"] == 0.0
  # One network for everything is far worse than the blocks (on validation
  # and, paired by seed, on test).
  one = g["by_networks"][0]["exhaustive"]
  assert one["val"] < two["exhaustive"]["val"] - 20
  assert two["exhaustive"]["vs_mtl"]["lo"] > 0
  z = np.asarray(g["affinity"]["matrix"])
  within = [z[0, 1], z[1, 0], z[2, 3], z[3, 2]]
  between = z[:2, 2:].ravel().tolist() + z[2:, :2].ravel().tolist()
  assert min(within) > 0 > max(between)
  assert sorted(g["affinity"]["order"][:2]) in ([0, 1], [2, 3])
