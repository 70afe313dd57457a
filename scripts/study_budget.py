"""Where a study's wall time went: each sweep point's, from its workdir.

    python scripts/study_budget.py workdirs/reproduce_full

A point's wall time is the span from its env.json (written when it starts)
to its results.json's env record (written when it ends): training,
evaluation, checkpoints and reports, without the process's start-up. A point
that was resumed counts only its last span. Prints one row per point (its
results entries, one per arm, seed and learning rate; its steps; its wall
time) and each experiment's total, and the machine kind
the points ran on.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys


def _time(s: str) -> datetime.datetime:
  return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S%z")


def points(workdir: str) -> list[dict]:
  """One dict per finished sweep point under workdir (any depth)."""
  out = []
  for root, dirs, files in os.walk(workdir):
    dirs[:] = sorted(d for d in dirs if d not in ("checkpoints", "tensorboard",
                                                  "plots"))
    if "results.json" not in files or "env.json" not in files:
      continue
    with open(os.path.join(root, "results.json")) as f:
      res = json.load(f)
    with open(os.path.join(root, "env.json")) as f:
      start = json.load(f)
    if "runs" not in res:
      continue  # a summary (report.json), not a point's results
    end = res.get("env", {})
    cfg = res.get("config", {})
    out.append({
        "experiment": res.get("experiment", "?"),
        "point": os.path.relpath(root, workdir),
        "runs": len(res["runs"]),
        "steps": cfg.get("train", {}).get("steps"),
        "seconds": (_time(end["time"]) - _time(start["time"])).total_seconds()
                   if "time" in end and "time" in start else None,
        "cpu": (end.get("cpu") or {}).get("kind", "not recorded"),
    })
  return out


def table(rows: list[dict]) -> str:
  """Markdown: points, then per-experiment totals."""
  lines = ["| experiment | point | entries (arm × seed × rate) | steps | "
           "wall (min) |",
           "|---|---|---:|---:|---:|"]
  totals: dict[str, float] = {}
  for r in rows:
    s = r["seconds"]
    lines.append(f"| {r['experiment']} | `{os.path.basename(r['point'])}` | "
                 f"{r['runs']} | {r['steps']} | "
                 + ("—" if s is None else f"{s / 60:.1f}") + " |")
    totals[r["experiment"]] = totals.get(r["experiment"], 0.0) + (s or 0.0)
  lines += ["", "| experiment | points | wall (min) |", "|---|---:|---:|"]
  for exp, s in totals.items():
    n = sum(r["experiment"] == exp for r in rows)
    lines.append(f"| {exp} | {n} | {s / 60:.1f} |")
  lines.append(f"| **all** | {len(rows)} | "
               f"**{sum(totals.values()) / 60:.1f}** |")
  kinds = sorted({r["cpu"] for r in rows})
  lines += ["", "Machine kind of the points: " + ", ".join(kinds) + "."]
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("workdir")
  args = p.parse_args(argv)
  if not os.path.isdir(args.workdir):
    print(f"study_budget: {args.workdir}: no such directory", file=sys.stderr)
    return 2
  rows = points(args.workdir)
  if not rows:
    print(f"study_budget: no finished sweep point under {args.workdir}",
          file=sys.stderr)
    return 2
  print(table(rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())
