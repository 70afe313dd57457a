"""`mtljax report` on bad inputs: one `error:` line, exit 2, nothing written.

Workdirs are fabricated results.json files (as in test_report.py), so no model
is trained. Each case checks the return code, that stderr is exactly one line
starting with "error:" (no traceback), and that the file tree is unchanged.
"""

import json
import os
import shutil

import pytest

from mtljax import cli

TASKS = ["a", "b"]


def _metrics(v):
  per_task = {t: {"auc": v, "ap": v, "acc": None, "loss": 1 - v}
              for t in TASKS}
  return {"per_task": per_task, "mean": dict(per_task["a"])}


def _results(width=4, arms=("mtl", "stl")):
  runs = [{"arm": arm, "mode": arm, "seed": s, "learning_rate": lr,
           "width": width, "param_count": 10, "best_step": [1, 1],
           "val": _metrics(0.7 + 0.01 * s), "test": _metrics(0.8 + 0.01 * s)}
          for arm in arms for lr in (1e-3, 1e-2) for s in (0, 1)]
  return {"schema_version": 1, "experiment": "toy",
          "condition": {"model.width": width},
          "dataset": {"name": "toy", "task_names": TASKS},
          "selection_metric": "auc", "config": {}, "env": {}, "runs": runs}


def _write(path, obj):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "results.json"), "w") as f:
    json.dump(obj, f)
  return str(path)


def _tree(root):
  """Every path under root with its content: any creation or change shows."""
  out = {}
  for d, dirs, files in os.walk(root):
    for name in dirs:
      out[os.path.join(d, name)] = None
    for name in files:
      with open(os.path.join(d, name), "rb") as f:
        out[os.path.join(d, name)] = f.read()
  return out


def _fails(capsys, tmp_path, argv):
  """Runs `mtljax report ...` in-process; returns its one error line."""
  capsys.readouterr()
  before = _tree(tmp_path)
  rc = cli.main(["report", *argv])
  err = capsys.readouterr().err
  assert rc == 2, err
  assert "Traceback" not in err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  assert _tree(tmp_path) == before, "the failed report created or changed files"
  return lines[0]


def test_same_run_in_two_workdirs_is_refused_naming_both(tmp_path, capsys):
  first = _write(tmp_path / "first", _results())
  second = str(tmp_path / "second")
  shutil.copytree(first, second)  # the same runs under another name
  for extra in ([], ["--out", str(tmp_path / "out")]):
    line = _fails(capsys, tmp_path, [first, second, *extra])
    assert f"in {first} and in {second}" in line
    assert "('toy', {\"model.width\": 4}, 'mtl', 0, 0.001)" in line
    assert "twice" in line


@pytest.mark.parametrize("out", ["afile/sub", "afile"])
def test_out_under_a_file_names_the_directory(tmp_path, capsys, out):
  wd = _write(tmp_path / "wd", _results())
  (tmp_path / "afile").write_text("not a directory")
  out = str(tmp_path / out)
  line = _fails(capsys, tmp_path, [wd, "--out", out])
  assert line.startswith(f"error: {out}: cannot write the report there")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root can write to a read-only directory")
def test_read_only_out_names_the_directory(tmp_path, capsys):
  wd = _write(tmp_path / "wd", _results())
  ro = tmp_path / "ro"
  os.makedirs(ro)
  os.chmod(ro, 0o555)
  try:
    line = _fails(capsys, tmp_path, [wd, "--out", str(ro)])
  finally:
    os.chmod(ro, 0o755)
  assert line.startswith(f"error: {ro}: cannot write the report there")


def _truncated(path):
  text = open(path).read()
  with open(path, "w") as f:
    f.write(text[:len(text) // 2])


def _edit(change):
  def corrupt(path):
    r = json.load(open(path))
    change(r)
    with open(path, "w") as f:
      json.dump(r, f)
  return corrupt


@pytest.mark.parametrize("corrupt, match", [
    (_truncated, "not a readable results.json"),
    (_edit(lambda r: r.pop("runs")), "no 'runs'"),
    (_edit(lambda r: r["runs"][1].pop("test")), "run 1 lacks test"),
    (_edit(lambda r: r.__setitem__("condition", [4])),
     "condition is not an object"),
    (_edit(lambda r: r["runs"][0]["val"].__setitem__("per_task", [0.5])),
     "run 0: val.per_task is not"),
    (_edit(lambda r: r["runs"][0]["test"]["per_task"].__setitem__("a", 0.5)),
     "run 0: test.per_task is not"),
    (_edit(lambda r: r["runs"][0]["test"]["per_task"]["b"].__setitem__(
        "auc", "high")), "run 0: test.per_task is not"),
    (_edit(lambda r: r["runs"][2].__setitem__("seed", [0])),
     "run 2: seed, learning_rate or param_count is not a number"),
    (_edit(lambda r: r["runs"][2].__setitem__("learning_rate", "fast")),
     "run 2: seed, learning_rate or param_count is not a number"),
    (_edit(lambda r: r.__setitem__("selection_metric", "f1")),
     "selection_metric 'f1' is not one of"),
    (_edit(lambda r: r["dataset"].__setitem__("tasks", [
        {"name": "a", "type": "ordinal"}, {"name": "b", "type": "binary"}])),
     "dataset.tasks[0] is not a valid task"),
    (_edit(lambda r: r["dataset"].__setitem__("tasks", [
        {"name": "a", "type": "multiclass"}, {"name": "b", "type": "binary"}])),
     "dataset.tasks[0] is not a valid task"),
    (_edit(lambda r: r["dataset"].__setitem__("tasks", [
        {"name": "b", "type": "binary"}, {"name": "a", "type": "binary"}])),
     "differ from dataset.task_names"),
    (_edit(lambda r: r["dataset"].__setitem__("tasks", "binary")),
     "dataset.tasks is not a non-empty list"),
], ids=["truncated", "no_runs", "run_lacks_test", "condition_list",
        "per_task_list", "task_metrics_number", "metric_string", "seed_list",
        "lr_string", "selection_metric", "unknown_task_type",
        "multiclass_without_k", "task_order", "tasks_string"])
def test_corrupt_sweep_point_names_the_file(tmp_path, capsys, corrupt, match):
  sweep = tmp_path / "sweep"
  for w in (4, 64):
    _write(sweep / f"width={w}", _results(w))
  bad = str(sweep / "width=64" / "results.json")
  corrupt(bad)
  line = _fails(capsys, tmp_path, [str(sweep), "--out", str(tmp_path / "out")])
  assert line.startswith(f"error: {bad}: ") and match in line


@pytest.mark.parametrize("extra", [[], ["--out", "out"]])
def test_nonexistent_directory_is_named_and_not_created(tmp_path, capsys,
                                                         extra):
  missing = str(tmp_path / "missing")
  extra = [str(tmp_path / e) if e == "out" else e for e in extra]
  line = _fails(capsys, tmp_path, [missing, *extra])
  assert line == f"error: {missing}: no such file or directory"
  assert not os.path.exists(missing) and not os.path.exists(tmp_path / "out")


def test_unknown_baseline_is_refused_listing_the_arms(tmp_path, capsys):
  wd = _write(tmp_path / "wd", _results())
  line = _fails(capsys, tmp_path, [wd, "--baseline", "foo"])
  assert "'foo'" in line and "mtl, stl" in line
  assert not os.path.exists(os.path.join(wd, "report.md"))


def test_existing_baselines_and_default_still_report(tmp_path, capsys):
  wd = _write(tmp_path / "wd", _results())
  assert cli.main(["report", wd, "--baseline", "mtl"]) == 0
  report = json.load(open(os.path.join(wd, "report.json")))
  assert report["baseline"] == "mtl"
  assert list(report["conditions"][0]["comparisons"]) == ["stl"]
  # The default "stl" may not apply (e.g. arms that are missing-label
  # policies): then the report is written, with a note, as before.
  wd2 = _write(tmp_path / "wd2", _results(arms=("mtl", "mtl_negative")))
  assert cli.main(["report", wd2]) == 0
  md = open(os.path.join(wd2, "report.md")).read()
  assert "baseline arm 'stl' not present" in md
  assert "Traceback" not in capsys.readouterr().err


def test_task_types_that_differ_within_a_condition(tmp_path, capsys):
  mtl, stl = _results(arms=("mtl",)), _results(arms=("stl",))
  mtl["dataset"]["tasks"] = [{"name": "a", "type": "binary"},
                             {"name": "b", "type": "binary"}]
  stl["dataset"]["tasks"] = [{"name": "a", "type": "binary"},
                             {"name": "b", "type": "regression", "loss": "mse"}]
  first = _write(tmp_path / "mtl", mtl)
  second = _write(tmp_path / "stl", stl)
  line = _fails(capsys, tmp_path, [first, second, "--out",
                                   str(tmp_path / "out")])
  assert "task types" in line and "differ" in line and second in line


def test_selection_metric_primary_is_accepted(tmp_path, capsys):
  r = _results()
  r["selection_metric"] = "primary"
  wd = _write(tmp_path / "wd", r)
  assert cli.main(["report", wd]) == 0
  md = open(os.path.join(wd, "report.md")).read()
  # Binary tasks: the primary metric is AUC, and the tables read as AUC.
  assert "| task | Δ AUC |" in md and "validation primary metric" in md
  assert md.count("Test AUC (higher is better).") == 1
  assert "Traceback" not in capsys.readouterr().err
