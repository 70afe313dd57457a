"""Study v2's claims (mtljax/study/claims.py) on hand-made report summaries:
each claim's comparisons are the paired differences a hand computation
gives, and the verdicts follow rules.py (tested in test_rules.py)."""

import numpy as np
import pytest

from mtljax.study import claims
from mtljax.study import reproduce
from mtljax.study import rules

SEEDS = [0, 1, 2, 3, 4]
TASKS = ["a", "b", "c", "d"]
NOISE = np.array([0.004, -0.003, 0.001, -0.002, 0.0])


def arm(per_task: dict, seeds=SEEDS):
  """An arm of a summary from {task: per-seed values}."""
  rows = np.array([per_task[t] for t in per_task]).T
  return {"seeds": list(seeds),
          "test": {"mean": {"values": rows.mean(1).tolist()},
                   "per_task": {t: {"values": list(map(float, v))}
                                for t, v in per_task.items()}}}


def cond(exp, arms, condition=None, dataset="mtl_scenes", tasks=TASKS):
  return {"experiment": exp, "dataset": dataset, "label": exp,
          "condition": condition or {}, "task_names": tasks,
          "task_metrics": {t: "auc" for t in tasks},
          "task_higher_is_better": {t: True for t in tasks},
          "arms": {k: v for k, v in arms.items()}}


def level(x, tasks=TASKS):
  return {t: x + NOISE for t in tasks}


def summary(*conds):
  return {"metric": "auc", "conditions": list(conds)}


def test_sharing_has_one_comparison_per_kind_with_paired_diffs():
  c = cond("e1_mtl_vs_stl", {"mtl": arm(level(0.70)),
                             "stl": arm(level(0.80)),
                             "stl_matched": arm(level(0.75)),
                             "mtl_matched": arm(level(0.78))})
  comps = claims.sharing({"e1": summary(c)})
  by = {x.kind: x for x in comps}
  assert set(by) == set(claims.KINDS_C1)
  np.testing.assert_allclose(by["equal width"].diffs, -0.10, atol=1e-12)
  np.testing.assert_allclose(by["equal parameters"].diffs, -0.05, atol=1e-12)
  np.testing.assert_allclose(by["equal compute"].diffs, -0.02, atol=1e-12)
  np.testing.assert_allclose(by["equal width"].reference, 0.80 + NOISE)
  vs = reproduce.verdicts({"e1": summary(c)})
  c1 = [v for v in vs if v["claim"].startswith("C1")]
  assert [v["verdict"] for v in c1] == ["not supported"] * 3


def test_e2_adjacent_widths_give_equal_compute_evidence():
  e2 = summary(*[cond("e2_width_sweep_mtl_scenes",
                      {"mtl": arm(level(0.6 + w / 1000)),
                       "stl": arm(level(0.7 + w / 1000))},
                      {"model.width": w}) for w in (8, 16, 32)])
  comps = [c for c in claims.sharing({"e2": e2}) if c.kind == "equal compute"]
  assert [c.name.split(": ")[1] for c in comps] == [
      "mtl at w=16 − stl at w=8", "mtl at w=32 − stl at w=16"]
  np.testing.assert_allclose(comps[0].diffs, (0.616 - 0.708), atol=1e-12)


def test_size_judges_only_plateaued_widths():
  # STL gains 0.05, then 0.004 (< the 0.01 margin), then 0.002.
  stl = {8: 0.80, 16: 0.85, 32: 0.854, 64: 0.856}
  e2 = summary(*[cond("e2_width_sweep_mtl_scenes",
                      {"mtl": arm(level(stl[w] - 0.02)),
                       "stl": arm(level(stl[w]))}, {"model.width": w})
                 for w in stl])
  comps, notes = claims.size({"e2": e2})
  assert [c.name for c in comps] == ["e2 mtl_scenes w=16: mtl − stl",
                                     "e2 mtl_scenes w=32: mtl − stl"]
  assert sum("plateaued: judged" in n for n in notes) == 2
  v = rules.verdict(claims.C6, comps)
  assert v["verdict"] == "not supported"


def test_size_leaves_out_the_branching_axis():
  # A share_k condition at a width must not enter C6 or equal compute.
  hps = [cond("e2_width_sweep_mtl_scenes", {"mtl": arm(level(0.7)),
                                            "stl": arm(level(0.8))},
              {"model.width": 8})]
  share = cond("e2_share_k", {"mtl": arm(level(0.5)), "stl": arm(level(0.9))},
               {"model.width": 16, "model.arch": "share_k",
                "model.arch_kwargs.shared_stages": 1})
  _, notes = claims.size({"e2": summary(*hps, share)})
  assert notes == claims.size({"e2": summary(*hps)})[1]
  assert not [c for c in claims.sharing({"e2": summary(*hps, share)})
              if c.kind == "equal compute"]


def test_size_without_a_plateau_is_inconclusive():
  e2 = summary(*[cond("e2_width_sweep_mtl_scenes",
                      {"mtl": arm(level(0.6)), "stl": arm(level(0.6 + w / 100))},
                      {"model.width": w}) for w in (4, 8, 16)])
  vs = reproduce.verdicts({"e2": e2})
  (c6,) = [v for v in vs if v["claim"].startswith("C6")]
  assert c6["verdict"] == "inconclusive"
  assert any("no plateaued width" in n for n in c6["notes"])


def _target_cond(exp, t, n, aux, mtl, stl, loss="per_example", extra=None,
                 dataset="mtl_scenes", shuffle=()):
  budget = [n if k == t else aux for k in range(4)]
  arms = {"mtl": arm({TASKS[t]: mtl + NOISE}), "stl": arm({TASKS[t]:
                                                           stl + NOISE})}
  for k, v in (extra or {}).items():
    arms[k] = arm({TASKS[t]: v + NOISE})
  return cond(exp, arms, {"stl_tasks": [t], "data.label_budget": budget,
                          "loss.normalize": loss,
                          "data.shuffle_tasks": list(shuffle)}, dataset)


def test_asymmetry_gain_growth_and_loss_arms():
  e3 = summary(
      _target_cond("e3_data_asymmetry", 1, 100, 100, 0.70, 0.75),
      _target_cond("e3_data_asymmetry", 1, 100, -1, 0.78, 0.75),
      _target_cond("e3_data_asymmetry", 1, 100, -1, 0.77, 0.74, "per_task",
                   {"target_weighted": 0.80}))
  by = {c.kind: c for c in claims.asymmetry({"e3": e3})}
  assert set(by) == {"gain, summed loss", "growth with auxiliary data",
                     "gain, per-task loss", "gain, target-weighted loss"}
  np.testing.assert_allclose(by["gain, summed loss"].diffs, 0.03, atol=1e-12)
  # growth = (0.78 − 0.75) − (0.70 − 0.75)
  np.testing.assert_allclose(by["growth with auxiliary data"].diffs, 0.08,
                             atol=1e-12)
  np.testing.assert_allclose(by["gain, target-weighted loss"].diffs, 0.06,
                             atol=1e-12)
  assert "target b (100 labels)" in by["gain, summed loss"].name


def test_features_contrasts_shared_with_each_control_by_target_index():
  e3 = summary(_target_cond("e3_data_asymmetry", 2, 300, -1, 0.80, 0.76))
  e5 = summary(
      _target_cond("e5_unrelated_tasks", 2, 300, -1, 0.60, 0.70,
                   dataset="mtl_scenes/unrelated"),
      _target_cond("e5_unrelated_tasks", 2, 300, -1, 0.74, 0.76,
                   shuffle=(0, 1, 3)))
  by = {c.kind: c for c in claims.features({"e3": e3, "e5": e5})}
  # (0.80 − 0.76) − (0.60 − 0.70) and (0.80 − 0.76) − (0.74 − 0.76)
  np.testing.assert_allclose(by["vs unrelated auxiliary tasks"].diffs, 0.14,
                             atol=1e-12)
  np.testing.assert_allclose(by["vs shuffled auxiliary labels"].diffs, 0.06,
                             atol=1e-12)
  np.testing.assert_allclose(by["vs shuffled auxiliary labels"].reference,
                             0.76 + NOISE)


def test_methods_verdict_is_one_sided():
  def e7(levels):
    arms = {"mtl": arm(level(0.80)), "stl": arm(level(0.85))}
    arms.update({k: arm(level(x)) for k, x in levels.items()})
    return {"e7": summary(cond("e7_methods", arms))}
  (same,) = [v for v in reproduce.verdicts(e7({"uw": 0.801, "pcgrad": 0.70}))
             if v["claim"].startswith("C7")]
  # EW ties uw (equivalent) and beats pcgrad: nothing beats it.
  assert [j["outcome"] for j in same["comparisons"]] == ["equivalent",
                                                         "favours"]
  assert same["verdict"] == "supported"
  (beaten,) = [v for v in reproduce.verdicts(e7({"uw": 0.83}))
               if v["claim"].startswith("C7")]
  assert beaten["verdict"] == "not supported"


def test_positive_control_and_missing_labels():
  e9 = summary(_target_cond("e9_multi_mnist", 0, 100, -1, 0.80, 0.70,
                            dataset="multi_mnist"))
  (c5,) = claims.positive_control({"e9": e9})
  assert c5.kind == "multi_mnist"
  np.testing.assert_allclose(c5.diffs, 0.10, atol=1e-12)
  e4 = summary(cond("e4_missing_labels",
                    {"mtl": arm(level(0.8)), "mtl_negative": arm(level(0.7)),
                     "mtl_drop": arm(level(0.75))}))
  comps = claims.missing({"e4": e4})
  np.testing.assert_allclose([np.mean(c.diffs) for c in comps], [0.1, 0.05])


def test_at_the_floor_every_claim_is_inconclusive():
  c = cond("e1_mtl_vs_stl", {"mtl": arm(level(0.50)),
                             "stl": arm(level(0.55))})
  (v,) = [v for v in reproduce.verdicts({"e1": summary(c)})
          if v["claim"].startswith("C1")]
  assert v["verdict"] == "inconclusive"
  assert "floor or ceiling" in v["comparisons"][0]["rule"]


@pytest.mark.parametrize("present", [(), ("e1",)])
def test_claims_without_their_experiment_are_not_tested(present):
  c = cond("e1_mtl_vs_stl", {"mtl": arm(level(0.7)), "stl": arm(level(0.8))})
  vs = reproduce.verdicts({e: summary(c) for e in present})
  untested = {v["claim"].split()[0] for v in vs
              if v["verdict"] == "not tested"}
  expected = {f"C{i}" for i in range(1, 9)} - (
      {"C1", "C6"} if present else set())
  # C6 reads E2 and E6; with E1 only it is not tested either.
  assert untested == expected | ({"C6"} if present else set())


def test_a_mixed_summary_still_judges_an_auc_condition_in_auc():
  """A summary over datasets of several types reports "primary", whose
  range would let a chance-level AUC through; the condition's own AUC
  range applies."""
  c = cond("e1_mtl_vs_stl", {"mtl": arm(level(0.45)),
                             "stl": arm(level(0.50))})
  s = {"metric": "primary", "conditions": [c]}
  (v,) = [v for v in reproduce.verdicts({"e1": s})
          if v["claim"].startswith("C1")]
  assert v["comparisons"][0]["metric"] == "auc"
  assert v["verdict"] == "inconclusive"


def _e8_cond(dataset, groups, vs_mtl, delta_m):
  sel = {"groups": groups, "val": 1.0,
         "vs_mtl": {"values": list(vs_mtl)},
         "delta_m": {"values": list(delta_m)}}
  c = cond("e8_grouping", {"mtl": arm(level(0.7)), "stl": arm(level(0.8))},
           dataset=dataset)
  c["grouping"] = {"by_networks": [{"networks": 1, "exhaustive": sel}]}
  return c


def test_grouping_is_inconclusive_where_the_selection_is_the_reference():
  stl_like = _e8_cond("mtl_scenes", [["a"], ["b"], ["c"], ["d"]],
                      0.1 + NOISE, [0.0] * 5)
  control = _e8_cond("mtl_scenes/unrelated", [["a", "b"], ["c", "d"]],
                     0.1 + NOISE, 5 + NOISE)
  comps = claims.grouping({"e8": summary(stl_like, control)})
  assert {c.name.split(":")[0] for c in comps} == {"mtl_scenes"}
  by = {c.kind: rules.judge(c) for c in comps}
  assert by["vs all-in-one (MTL)"]["outcome"] == "favours"
  dm = by["vs all-separate (STL, Δm %)"]
  assert dm["outcome"] == "inconclusive" and "same networks" in dm["rule"]


def test_c2_is_judged_on_the_growth_and_the_gains_are_context():
  e3 = summary(
      _target_cond("e3_data_asymmetry", 1, 100, 100, 0.70, 0.75),
      _target_cond("e3_data_asymmetry", 1, 100, -1, 0.78, 0.75))
  vs = {v["claim"]: v for v in reproduce.verdicts({"e3": e3})
        if v["claim"].startswith("C2")}
  assert [c.split("[")[1] for c in vs if c.startswith("C2 data")] == [
      "growth with auxiliary data]"]
  assert any(c.startswith("C2 context") for c in vs)


def test_forest_plot_of_a_verdict(tmp_path):
  from mtljax.analysis import plots
  c = cond("e1_mtl_vs_stl", {"mtl": arm(level(0.7)), "stl": arm(level(0.8)),
                             "stl_matched": arm(level(0.75))})
  vs = reproduce.verdicts({"e1": summary(c)})
  path = plots.forest(vs[0], str(tmp_path / "f.png"))
  assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  assert plots.forest({"claim": "x", "verdict": "not tested",
                       "comparisons": []}, str(tmp_path / "g.png")) is None


def test_an_experiment_kept_as_its_report_counts(tmp_path):
  # E8's committed summary (docs/results/grouping/sweep_report.json) with no
  # results.json beside it: its claim is judged from the report alone.
  import os  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  src = os.path.join(os.path.dirname(__file__), "..", "docs", "results",
                     "grouping", "sweep_report.json")
  (tmp_path / "e8_grouping").mkdir()
  shutil.copy(src, tmp_path / "e8_grouping" / "report.json")
  s = reproduce._load_existing(str(tmp_path), "stl", "e8_grouping")  # pylint: disable=protected-access
  assert s is not None and s["conditions"]
  vs = [v for v in reproduce.verdicts({"e8": s})
        if v["claim"].startswith(claims.C8)]
  # As docs/RESULTS.md has it: supported against all-in-one.
  assert [v["verdict"] for v in vs][0] == "supported"
  # Another baseline's report, or none at all, is not taken.
  assert reproduce._load_existing(str(tmp_path), "mtl", "e8_grouping") is None  # pylint: disable=protected-access
  assert reproduce._load_existing(str(tmp_path), "stl", "e7_methods") is None  # pylint: disable=protected-access
