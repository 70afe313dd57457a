"""Learning curves from metrics.jsonl's per-task validation log."""

import json

import numpy as np
import pytest

from mtljax.analysis import curves
from mtljax.analysis import stats


def _condition(tmp_path):
  rng = np.random.default_rng(0)
  vals = {}  # (arm, task, lr, step, seed) -> value
  with open(tmp_path / "metrics.jsonl", "w") as f:
    for step in (10, 20, 30):
      per = {}
      for arm in ("mtl", "stl"):
        for task in ("a", "b"):
          for lr in (1e-3, 1e-2):
            for seed in (0, 1, 2):
              v = float(rng.random())
              vals[arm, task, lr, step, seed] = v
              per.setdefault(arm, {}).setdefault(task, {})[
                  f"seed{seed}_lr{lr:g}"] = v
      f.write(json.dumps({"step": step, "kind": "train", "arms": {}}) + "\n")
      f.write(json.dumps({"step": step, "kind": "validation",
                          "per_task": per}) + "\n")
    f.write('{"step": 40, "kind": "valid')  # a line cut short by a kill
  c = {"experiment": "e", "label": "x", "selection_metric": "auc",
       "sources": [str(tmp_path / "results.json")],
       "task_metrics": {"a": "auc", "b": "auc"},
       "arms": {"mtl": {"lr": {"chosen": {"a": 1e-2, "b": 1e-2}}},
                "stl": {"lr": {"chosen": {"a": 1e-3, "b": 1e-2}}}}}
  return c, vals


def test_curves_are_each_arms_chosen_rate_with_a_ci_over_seeds(tmp_path):
  c, vals = _condition(tmp_path)
  got = curves.load_curves(c)
  for arm, task in (("mtl", "a"), ("stl", "a"), ("stl", "b")):
    lr = c["arms"][arm]["lr"]["chosen"][task]
    steps, mean, lo, hi = got[arm][task]
    assert list(steps) == [10, 20, 30]
    for k, step in enumerate((10, 20, 30)):
      want = stats.mean_ci([vals[arm, task, lr, step, s] for s in (0, 1, 2)])
      assert (mean[k], lo[k], hi[k]) == pytest.approx(want[:3])
  path = curves.plot_curves(c, got, str(tmp_path / "c.png"))
  assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_no_per_task_log_means_no_curves(tmp_path):
  c, _ = _condition(tmp_path)
  c["sources"] = [str(tmp_path / "elsewhere" / "results.json")]
  assert curves.load_curves(c) == {}
  assert curves.plot_curves(c, {}, str(tmp_path / "c.png")) is None


def test_per_task_error_bars_are_clipped_to_the_metric_range(tmp_path,
                                                            monkeypatch):
  # A t-interval over 5 seeds of AUCs can pass 1.0 (one failed seed
  # widens it); the dot plot clips each bar to its task's range, and the
  # axis follows (it would reach ~1.1 otherwise).
  from mtljax.analysis import plots  # pylint: disable=g-import-not-at-top
  figs = []
  monkeypatch.setattr(plots, "_save", lambda fig, path, rect=None: (
      figs.append(fig), path)[1])
  series = {"stl_matched": ([0.84, 0.5], [0.6, 0.3], [1.09, 0.7])}
  for bounds in (None, [plots.bounds_of(["auc"])] * 2):
    plots.per_task_bars(["car", "x"], series, str(tmp_path / "p.png"),
                        bounds=bounds)
  unclipped, clipped = (f.axes[0].get_ylim() for f in figs)
  assert unclipped[1] > 1.09
  assert clipped[1] < 1.09 and clipped[0] < 0.3
  # A mean over an AUC and an R² task lies in the union of their ranges.
  assert plots.bounds_of(["auc", "r2"]) == (-np.inf, 1.0)
