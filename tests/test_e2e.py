"""End to end: train_and_evaluate, exact resume, vmapped seeds, sweeps, report.

Tiny configs (the experiments' `smoke` variant: an MLP, a few steps on
600/200/200-example splits), so each test takes seconds.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mtljax import cli
from mtljax import config as config_lib
from mtljax.run import train
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
E1 = os.path.join(ROOT, "experiments", "e1_mtl_vs_stl.py")
E2 = os.path.join(ROOT, "experiments", "e2_width_sweep.py")


def smoke_config(*overrides):
  return config_lib.load_config(f"{E1}:smoke", [
      "modes=('mtl','stl')", "train.progress='none'", *overrides])


def test_tiny_run_writes_results_logs_and_checkpoints(smoke_data_dir, tmp_path):
  wd = str(tmp_path / "run")
  res = train.train_and_evaluate(smoke_config(), wd)
  on_disk = json.load(open(os.path.join(wd, "results.json")))
  assert on_disk["schema_version"] == 1
  assert on_disk["dataset"]["task_names"] == [
      "pedestrian", "car", "stop_sign", "traffic_light"]
  # 2 seeds × (mtl + stl) × 1 learning rate
  assert sorted((r["arm"], r["seed"]) for r in res["runs"]) == [
      ("mtl", 0), ("mtl", 1), ("stl", 0), ("stl", 1)]
  mtl = next(r for r in res["runs"] if r["arm"] == "mtl")
  stl = next(r for r in res["runs"] if r["arm"] == "stl")
  assert stl["param_count"] > mtl["param_count"]   # 4 encoders vs 1
  for r in res["runs"]:
    for split in ("val", "test"):
      assert set(r[split]["per_task"]) == set(on_disk["dataset"]["task_names"])
      assert 0.0 <= r[split]["mean"]["auc"] <= 1.0
    assert all(s in (3, 6) for s in r["best_step"])
  lines = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert [l["step"] for l in lines if l["kind"] == "validation"] == [3, 6]
  # Learning curves per task and per seed (not only arm means), from the
  # same evaluation as results.json: the last one is the best step's here.
  val = [l for l in lines if l["kind"] == "validation"][-1]
  assert set(val["per_task"]) == {"mtl", "stl"}
  assert set(val["per_task"]["stl"]) == set(on_disk["dataset"]["task_names"])
  assert set(val["per_task"]["mtl"]["car"]) == {"seed0_lr0.003",
                                                "seed1_lr0.003"}
  by_step = {l["step"]: l for l in lines if l["kind"] == "validation"}
  for r in (r for r in res["runs"] if r["mode"] == "mtl"):
    logged = by_step[r["best_step"][0]]["per_task"]["mtl"]
    for t, m in r["val"]["per_task"].items():
      assert logged[t][f"seed{r['seed']}_lr0.003"] == pytest.approx(m["auc"])
  assert os.listdir(os.path.join(wd, "tensorboard"))
  assert json.load(open(os.path.join(wd, "config.json")))["model"]["encoder"] == "mlp"
  assert "jax" in json.load(open(os.path.join(wd, "env.json")))["packages"]
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["3", "6"]


def test_interrupted_and_resumed_equals_uninterrupted(smoke_data_dir, tmp_path,
                                                      monkeypatch):
  cfg = smoke_config("train.steps=8", "train.eval_every=2",
                     "train.checkpoint_every=4", "model.dropout=0.3")
  full = train.train_and_evaluate(cfg, str(tmp_path / "full"))

  # Interrupt after step 6 (past the checkpoint at 4): steps 5-6 are redone.

  with pytest.raises(helpers.Stop), helpers.interrupted_at(monkeypatch, 6):
    train.train_and_evaluate(cfg, str(tmp_path / "resumed"))
  resumed = train.train_and_evaluate(cfg, str(tmp_path / "resumed"))
  strip = lambda r: [{k: v for k, v in run.items()} for run in r["runs"]]
  assert json.dumps(strip(full), sort_keys=True) == json.dumps(
      strip(resumed), sort_keys=True)
  steps = [json.loads(l)["step"] for l in open(tmp_path / "resumed" /
                                                "metrics.jsonl")]
  assert steps == sorted(steps) and len(steps) == len(set(
      (json.loads(l)["step"], json.loads(l)["kind"])
      for l in open(tmp_path / "resumed" / "metrics.jsonl")))


def test_methods_state_resumes_exactly(smoke_data_dir, tmp_path, monkeypatch):
  # Stateful methods (UW's log-variances and Adam moments, GradVac's EMA
  # targets) live in opt_state: an interrupted run resumes bit for bit.
  cfg = smoke_config("modes=('mtl',)", "num_seeds=1", "train.steps=6",
                     "train.eval_every=2", "train.checkpoint_every=2")
  cfg.method_arms = (("uw", {"weighting": "uw"}),
                     ("gradvac", {"aggregator": "gradvac"}))
  cfg = config_lib.validate(cfg)
  full = train.train_and_evaluate(cfg, str(tmp_path / "full"))
  with pytest.raises(helpers.Stop), helpers.interrupted_at(monkeypatch, 5):
    train.train_and_evaluate(cfg, str(tmp_path / "resumed"))
  resumed = train.train_and_evaluate(cfg, str(tmp_path / "resumed"))
  assert {r["arm"] for r in full["runs"]} == {"mtl", "uw", "gradvac"}
  assert json.dumps(full["runs"], sort_keys=True) == json.dumps(
      resumed["runs"], sort_keys=True)


def test_vmapped_seeds_equal_seeds_run_one_by_one(smoke_data_dir, tmp_path):
  together = train.train_and_evaluate(smoke_config("num_seeds=2"),
                                      str(tmp_path / "both"))
  for seed in (0, 1):
    alone = train.train_and_evaluate(
        smoke_config("num_seeds=1", f"seed={seed}"), str(tmp_path / f"s{seed}"))
    for arm in ("mtl", "stl"):
      a = next(r for r in together["runs"]
               if r["arm"] == arm and r["seed"] == seed)
      b = next(r for r in alone["runs"] if r["arm"] == arm)
      for t, m in a["test"]["per_task"].items():
        np.testing.assert_allclose(m["loss"], b["test"]["per_task"][t]["loss"],
                                   rtol=1e-5)
        # Batched and unbatched dots round differently (float32), so a nearly
        # tied pair of test scores may swap: one pair moves AUC by 1/(P*N),
        # ~1e-4 here. The loss above is the tight check.
        np.testing.assert_allclose(m["auc"], b["test"]["per_task"][t]["auc"],
                                   atol=1e-3)


def test_cli_sweep_report_and_print_commands(smoke_data_dir, tmp_path, capsys):
  wd = str(tmp_path / "sweep")
  assert cli.main(["sweep", "--config", f"{E2}:smoke", "--workdir", wd,
                   "--config.train.progress='none'"]) == 0
  assert os.path.exists(os.path.join(wd, "report.json"))
  md = open(os.path.join(wd, "report.md")).read()
  assert "mtl" in md and "stl" in md and "±" in md
  pngs = [f for f in os.listdir(os.path.join(wd, "plots")) if f.endswith(".png")]
  assert pngs
  for f in pngs:
    assert open(os.path.join(wd, "plots", f), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  summary = json.load(open(os.path.join(wd, "report.json")))
  assert [c["condition"].get("model.width") for c in summary["conditions"]
          if c["experiment"] == "e2_width_sweep_mtl_scenes"] == [1, 4]
  assert [c["condition"]["train.steps"] for c in summary["conditions"]
          if c["experiment"] == "e2_steps"] == [3]
  capsys.readouterr()
  assert cli.main(["sweep", "--config", f"{E2}:smoke", "--workdir", wd,
                   "--print-commands"]) == 0
  cmds = capsys.readouterr().out.strip().splitlines()
  assert len(cmds) == 3 and all(c.startswith("mtljax train --config") for c in cmds)
  assert "--config.model.width=4" in cmds[1]
  # `mtljax report` on the sweep directory regenerates the same report.
  assert cli.main(["report", wd, "--out", str(tmp_path / "rep")]) == 0
  assert os.path.exists(tmp_path / "rep" / "report.md")


def test_cli_user_errors_exit_2_without_traceback(tmp_path):
  env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds"))
  cases = [
      ["train", "--config", f"{E1}:smoke", "--workdir", str(tmp_path / "w"),
       "--config.model.widht=3"],
      ["train", "--config", f"{E1}:smoke", "--workdir", str(tmp_path / "w"),
       "--config.data.name='nope'"],
      ["report", str(tmp_path / "empty")],
  ]
  os.makedirs(tmp_path / "empty")
  for args in cases:
    p = subprocess.run([sys.executable, "-m", "mtljax", *args], env=env,
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2, (args, p.stderr)
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.slow
def test_smoke_reproduction(smoke_data_dir, tmp_path):
  from mtljax.study import reproduce
  from mtljax.study import rules
  vs = reproduce.reproduce("smoke", str(tmp_path / "repro"))
  claims = [v["claim"].split()[0] for v in vs]
  assert sorted(set(claims)) == [f"C{i}" for i in range(1, 9)]
  assert all(v["verdict"] in rules.VERDICTS + ("not tested",) for v in vs)
  # Every claim but the methods and grouping ones (run with --only) is
  # judged from comparisons; C1 once per kind, never pooled.
  tested = {c for c, v in zip(claims, vs) if v["verdict"] != "not tested"}
  assert tested == {f"C{i}" for i in range(1, 7)}
  assert [v["claim"].split("[")[1] for v in vs if v["claim"].startswith(
      "C1")] == ["equal width]", "equal parameters]", "equal compute]"]
  assert all(v["comparisons"] for v in vs
             if v["verdict"] != "not tested" and not v["claim"].startswith(
                 "C6"))
  text = open(tmp_path / "repro" / "VERDICTS.md").read()
  assert "| claim | verdict | rule |" in text
  for exp in ("e1_mtl_vs_stl", "e2_width_sweep", "e3_data_asymmetry",
              "e4_missing_labels", "e5_unrelated_tasks", "e6_digits",
              "e9_positive_control"):
    assert os.path.exists(tmp_path / "repro" / exp / "report.md")
