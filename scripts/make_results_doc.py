"""Assembles docs/RESULTS.md from a `mtljax reproduce` workdir.

    python scripts/make_results_doc.py workdirs/reproduce_quick \
        --difficulty workdirs/difficulty --out docs

Everything in the document is copied from files that `mtljax reproduce` and
`mtljax report` wrote (VERDICTS.md, each experiment's report.md overview
table, its plots); nothing is typed in by hand, so rerunning the commands
regenerates it. Hand-written interpretation goes in docs/RESULTS_NOTES.md,
which is included verbatim if present.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mtljax.analysis import plots  # noqa: E402  pylint: disable=wrong-import-position
from mtljax.study import rules  # noqa: E402  pylint: disable=wrong-import-position

# E8 (task grouping) is run apart from `mtljax reproduce`; its summary is
# included when scripts/make_grouping_doc.py has written it.
_E8_HEADING = "## e8_grouping (which tasks to learn together)"

EXPERIMENTS = ("e1_mtl_vs_stl", "e2_width_sweep", "e3_data_asymmetry",
               "e4_missing_labels", "e5_unrelated_tasks", "e6_digits",
               "e9_positive_control", "e7_methods")
# Study v1's claims → study v2's claim ids (for "What changed").
V1_CLAIMS = {"sharing": "C1", "size": "C6", "data": "C2",
             "missing labels": "C4", "features": "C3"}


def v1_verdicts(results_md: str) -> dict[str, tuple[str, str]]:
  """{v2 claim id: (v1 claim, v1 verdict)} from a study-v1 RESULTS.md's
  verdict table (`| claim | verdict | evidence |`)."""
  out = {}
  for line in results_md.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) != 3 or not cells[1].startswith("**"):
      continue
    key = cells[0].split(":")[0]
    if key in V1_CLAIMS:
      out[V1_CLAIMS[key]] = (cells[0], cells[1].strip("*"))
  return out


def changed(previous: dict, current: list[dict], previous_name: str,
            preview: list[dict] | None = None) -> str:
  """The "What changed" section: each v1 claim's verdict beside v2's (the
  preview's, marked, where the main run did not test the claim)."""
  lines = [f"## What changed from study v1 ({previous_name})", "",
           "Each study-v1 claim's verdict beside study v2's, with the rule "
           "that decided v2's (per kind where v2 judges kinds apart). "
           "The evidence is in the verdict table above.", "",
           "| claim | v1 verdict | v2 verdict | changed | v2 rule |",
           "|---|---|---|---|---|"]
  for cid, (claim, old) in sorted(previous.items()):
    # The claim itself, not its context rows ("C2 context: ...").
    own = lambda v: (v["claim"].split()[0] == cid
                     and v["claim"].split()[1].rstrip(":") != "context")
    mine = [v for v in current if own(v) and v["verdict"] != "not tested"]
    scale = ""
    if not mine and preview:
      mine = [v for v in preview if own(v) and v["verdict"] != "not tested"]
      scale = " (quick preview)"
    if not mine:
      lines.append(f"| {cid} {claim.split(':')[0]} | {old} | not tested | — | "
                   "its experiment did not run |")
    for v in mine:
      kind = v["claim"].split("[", 1)[1].rstrip("]") if "[" in v[
          "claim"] else ""
      lines.append(f"| {cid} {claim.split(':')[0]}"
                   + (f" [{kind}]" if kind else "")
                   + f" | {old} | {v['verdict']}{scale} | "
                   + ("yes" if v["verdict"] != old else "no")
                   + f" | {v['rule']} |")
  return "\n".join(lines)


def v2_verdicts(results_md: str) -> dict[str, tuple[str, str, str]]:
  """{claim: (verdict, rule, scale)} from a study-v2 RESULTS.md.

  Reads its "## Verdicts" table and, for claims that table did not test,
  its "## Preview verdicts" table (scale "quick preview"). A claim is the
  table's first cell, kind included ("C1 sharing: ... [equal width]").
  """
  tables, section = {"main": {}, "preview": {}}, None
  for line in results_md.splitlines():
    if line.startswith("## "):
      section = ("main" if line.startswith("## Verdicts") else "preview"
                 if line.startswith("## Preview verdicts") else None)
      continue
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if section and len(cells) == 4 and cells[1].startswith("**"):
      tables[section][cells[0]] = (cells[1].strip("*"), cells[2])
  out = {}
  for claim in list(tables["main"]) + list(tables["preview"]):
    verdict, rule = tables["main"].get(claim, ("not tested", ""))
    scale = ""
    if verdict == "not tested" and claim in tables["preview"]:
      verdict, rule = tables["preview"][claim]
      scale = "quick preview"
    out.setdefault(claim, (verdict, rule, scale))
  return _drop_untested_parents(out)


def _drop_untested_parents(verdicts: dict) -> dict:
  """Drops a claim's kind-less "not tested" row where rows for its kinds
  exist (a table lists "C1 ..." untested when another scale judged
  "C1 ... [equal width]")."""
  return {c: v for c, v in verdicts.items()
          if not (v[0] == "not tested" and "[" not in c
                  and any(o.startswith(c + " [") for o in verdicts))}


def _claim_id(claim: str) -> str:
  """"C2 context: ... [gain, summed loss]" -> "C2 context [gain, summed loss]"."""
  head = claim.split(":")[0]
  kind = claim.split("[", 1)[1].rstrip("]") if "[" in claim else ""
  return head + (f" [{kind}]" if kind else "")


def changed_since(previous: dict, current: list[dict], previous_name: str,
                  preview: list[dict] | None = None) -> str:
  """The "What changed since the previous document" section.

  Every claim row of either document: its verdict there and here, each
  with the scale that decided it, and the rule with its counts (the
  evidence: how many comparisons were against, favoured, equivalent or
  inconclusive). Claims are matched by their full text, kind included; a
  claim whose kinds were split or renamed shows as two rows.
  """
  now = {v["claim"]: (v["verdict"], v["rule"], "") for v in current}
  for v in preview or []:
    if (v["verdict"] != "not tested"
        and now.get(v["claim"], ("not tested",))[0] == "not tested"):
      now[v["claim"]] = (v["verdict"], v["rule"], "quick preview")
  previous, now = _drop_untested_parents(previous), _drop_untested_parents(now)
  lines = [f"## What changed since the previous document ({previous_name})",
           "", "Every claim's verdict there and here, with the rule that "
           "decided each (its counts are the evidence: the comparisons "
           "against, favouring, equivalent and inconclusive). The "
           "comparisons themselves are in the verdict tables above and in "
           "the previous document.", "",
           "| claim | previous verdict | previous rule | verdict now | "
           "rule now | changed |", "|---|---|---|---|---|---|"]
  mark = lambda verdict, scale: verdict + (f" ({scale})" if scale else "")
  for claim in list(dict.fromkeys(list(previous) + list(now))):
    old = previous.get(claim, ("absent", "—", ""))
    new = now.get(claim, ("absent", "—", ""))
    lines.append(f"| {_claim_id(claim)} | {mark(old[0], old[2])} | "
                 f"{old[1] or '—'} | {mark(new[0], new[2])} | "
                 f"{new[1] or '—'} | "
                 + ("**yes**" if old[0] != new[0] else
                    "scale only" if old[2] != new[2] else "no") + " |")
  return "\n".join(lines)


def _overview(report_md: str) -> str:
  """The '## Overview' section of a report.md (its first table)."""
  lines = report_md.splitlines()
  try:
    start = lines.index("## Overview") + 1
  except ValueError:
    return ""
  out = []
  for line in lines[start:]:
    if line.startswith("## "):
      break
    out.append(line)
  return "\n".join(out).strip()


def _arm_table(report_md: str) -> str:
  """Every 'Test AUC:' table of a report.md (arms × tasks per condition)."""
  out, lines, i = [], report_md.splitlines(), 0
  while i < len(lines):
    if lines[i].startswith("## ") and "—" in lines[i]:
      out.append("**" + lines[i][3:].strip() + "**\n")
    if lines[i].startswith("Test ") and lines[i].endswith(":"):
      i += 1
      while i < len(lines) and not lines[i].startswith("|"):
        i += 1
      while i < len(lines) and lines[i].startswith("|"):
        out.append(lines[i])
        i += 1
      out.append("")
    i += 1
  return "\n".join(out).strip()


def _forests(vs: list[dict], plots_out: str, prefix: str) -> str:
  """A forest plot per judged claim (and kind), as markdown image lines."""
  lines = ["Each judged claim's comparisons (mean and 95% CI of the paired "
           "difference, coloured by outcome; the grey band is the "
           "equivalence margin):", ""]
  for k, v in enumerate(vs):
    name = f"{prefix}_{k:02d}_{v['claim'].split()[0]}.png"
    if plots.forest(v, os.path.join(plots_out, name)):
      lines.append(f"![{v['claim']}](results/{name})")
  return "\n".join(lines)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("workdir")
  p.add_argument("--difficulty", default=None,
                 help="sweep dir of experiments/difficulty.py")
  p.add_argument("--out", default="docs")
  p.add_argument("--preview", default=None,
                 help="a `mtljax reproduce` (quick) workdir whose verdict "
                 "table to include after the main one")
  p.add_argument("--previous", default=None,
                 help="a study-v1 RESULTS.md whose verdicts to compare with")
  p.add_argument("--since", default=None,
                 help="the previous study-v2 RESULTS.md (an archived copy): "
                 "list every verdict that changed since it")
  args = p.parse_args()
  plots_out = os.path.join(args.out, "results")
  os.makedirs(plots_out, exist_ok=True)
  for f in os.listdir(plots_out):  # plots of an earlier run must not linger
    if f.endswith(".png"):
      os.remove(os.path.join(plots_out, f))
  verdicts = json.load(open(os.path.join(args.workdir, "verdicts.json")))
  parts = [open(os.path.join(args.workdir, "VERDICTS.md")).read().replace(
      "# Verdicts", "## Verdicts", 1)]
  parts.append(_forests(verdicts["verdicts"], plots_out, "verdict"))
  notes = os.path.join(args.out, "RESULTS_NOTES.md")
  head = ["# Results", "",
          f"Mode: **{verdicts['mode']}**. Generated by "
          f"`python scripts/make_results_doc.py {args.workdir}"
          + (f" --difficulty {args.difficulty}" if args.difficulty else "")
          + (f" --preview {args.preview}" if args.preview else "")
          + (f" --previous {args.previous}" if args.previous else "")
          + (f" --since {args.since}" if args.since else "")
          + f" --out {args.out}` from the outputs of `mtljax reproduce"
          + {"full": " --full", "gpu": " --full --profile gpu"}.get(
              verdicts["mode"], "") + "`.", ""]
  if os.path.exists(notes):
    head += [open(notes).read().strip(), ""]
  # Study v2's rules, fixed before its results (mtljax/study/rules.py).
  head += [rules.RULES_MARKDOWN.strip(), ""]
  if args.preview:
    pv = os.path.join(args.preview, "VERDICTS.md")
    parts.append(open(pv).read().replace("# Verdicts (", "## Preview verdicts (",
                                         1).strip())
    parts.append(_forests(json.load(open(os.path.join(
        args.preview, "verdicts.json")))["verdicts"], plots_out, "preview"))
  pv = (json.load(open(os.path.join(args.preview, "verdicts.json")))[
      "verdicts"] if args.preview else None)
  if args.since:
    parts.append(changed_since(v2_verdicts(open(args.since).read()),
                               verdicts["verdicts"], args.since, pv))
  if args.previous:
    parts.append(changed(v1_verdicts(open(args.previous).read()),
                         verdicts["verdicts"], args.previous, pv))
  if args.difficulty:
    rep = os.path.join(args.difficulty, "report.md")
    if os.path.exists(rep):
      parts.append("## Dataset difficulty\n\n`mtljax sweep --config "
                   "experiments/difficulty.py --workdir " + args.difficulty
                   + "`\n\n" + _arm_table(open(rep).read()))
  for exp in EXPERIMENTS:
    d = os.path.join(args.workdir, exp)
    rep = os.path.join(d, "report.md")
    if not os.path.exists(rep):
      continue
    md = open(rep).read()
    section = [f"## {exp}", "", f"Full report: `{rep}`.", "",
               _overview(md), "", _arm_table(md), ""]
    pdir = os.path.join(d, "plots")
    for f in sorted(os.listdir(pdir)) if os.path.isdir(pdir) else []:
      if f.endswith(".png") and ("_vs_" in f or f.endswith("per_task.png")):
        dst = os.path.join(plots_out, f)
        shutil.copyfile(os.path.join(pdir, f), dst)
        section.append(f"![{f}](results/{f})")
    parts.append("\n".join(section))
  grouping = os.path.join(args.out, "results", "grouping", "summary.md")
  if os.path.exists(grouping):  # scripts/make_grouping_doc.py's summary
    parts.append(_E8_HEADING + "\n\n" + open(grouping).read().strip())
  with open(os.path.join(args.out, "RESULTS.md"), "w") as f:
    f.write("\n".join(head) + "\n" + "\n\n".join(parts) + "\n")
  print(f"wrote {os.path.join(args.out, 'RESULTS.md')}")


if __name__ == "__main__":
  main()
