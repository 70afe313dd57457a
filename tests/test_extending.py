"""docs/EXTENDING.md runs as written: its python blocks, in order, in one process.

The blocks are written one after another into a generated script, as a
notebook would run them, with a timing marker around each; the script runs in
a fresh Python process in a temporary directory with its own TFDS data dir
and no persistent compilation cache. Each block must take under a minute (the
page promises it on a 2-core CPU). The experiment file shown on the page is
then also trained through the command line, as the page's bash block does.
"""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "EXTENDING.md")
BLOCK_LIMIT_S = 60.0
_MARK = "@@extending-block"


def python_blocks(text: str) -> list[str]:
  """The bodies of the ```python fenced blocks, in order."""
  return re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text,
                    flags=re.S | re.M)


def _script(blocks: list[str]) -> str:
  out = ["import time as _mtljax_doc_time\n"]
  for i, code in enumerate(blocks, 1):
    # Verbatim at top level, as a notebook cell: classes and functions land
    # in __main__ and every later block sees them.
    out.append(f"print('{_MARK} {i} start', flush=True)\n"
               "_mtljax_doc_t0 = _mtljax_doc_time.perf_counter()\n")
    out.append(code if code.endswith("\n") else code + "\n")
    out.append(f"print('{_MARK} {i} end', "
               "_mtljax_doc_time.perf_counter() - _mtljax_doc_t0, "
               "flush=True)\n")
  return "".join(out)


def _env(tmp_path) -> dict:
  env = dict(os.environ)
  env["TFDS_DATA_DIR"] = str(tmp_path / "tfds")
  env["MTLJAX_COMPILATION_CACHE"] = ""
  env["PYTHONPATH"] = os.pathsep.join(
      [ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
  # A reader's process has one CPU device, not the test session's eight.
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                 env.get("XLA_FLAGS", "")).strip()
  if flags:
    env["XLA_FLAGS"] = flags
  else:
    env.pop("XLA_FLAGS", None)
  return env


def test_blocks_are_found():
  blocks = python_blocks(open(DOC).read())
  assert len(blocks) >= 6
  assert any("registry.ENCODERS.register(" in b for b in blocks)
  assert all("```" not in b for b in blocks)


@pytest.mark.slow
def test_extending_md_runs_as_written(tmp_path):
  blocks = python_blocks(open(DOC).read())
  work = tmp_path / "notebook"
  work.mkdir()
  script = work / "extending_md.py"
  script.write_text(_script(blocks))
  env = _env(tmp_path)
  proc = subprocess.run(
      [sys.executable, str(script)], cwd=work, env=env, capture_output=True,
      text=True, timeout=BLOCK_LIMIT_S * len(blocks) + 120)
  times, started = {}, []
  for line in proc.stdout.splitlines():
    parts = line.split()
    if line.startswith(_MARK) and parts[2] == "start":
      started.append(int(parts[1]))
    elif line.startswith(_MARK) and parts[2] == "end":
      times[int(parts[1])] = float(parts[3])
  report = (f"block times (s): {times}\n--- stdout (tail) ---\n"
            f"{proc.stdout[-4000:]}\n--- stderr (tail) ---\n"
            f"{proc.stderr[-6000:]}")
  if proc.returncode != 0:
    failed = started[-1] if started else None
    code = blocks[failed - 1] if failed else ""
    pytest.fail(f"docs/EXTENDING.md python block {failed} failed (exit "
                f"{proc.returncode}):\n{code}\n{report}")
  assert sorted(times) == list(range(1, len(blocks) + 1)), report
  slow = {i: t for i, t in times.items() if t >= BLOCK_LIMIT_S}
  assert not slow, f"blocks over {BLOCK_LIMIT_S:.0f} s: {slow}\n{report}"

  # The page's command line: the experiment file as the config. The notebook
  # trained workdirs/my_exp from the same file's get_config(), so this
  # resumes a finished run (same config: the workdir is accepted).
  (exp,) = [b for b in blocks if b.startswith('"""my_exp.py')]
  (work / "my_exp.py").write_text(exp)
  cli = subprocess.run(
      [sys.executable, "-m", "mtljax", "train", "--config", "my_exp.py",
       "--workdir", "workdirs/my_exp", "--config.train.progress=none"],
      cwd=work, env=env, capture_output=True, text=True, timeout=300)
  assert cli.returncode == 0, cli.stderr[-4000:]
  saved = json.load(open(work / "workdirs" / "my_exp" / "config.json"))
  assert saved["model"]["encoder"] == "two_layer"
  assert saved["model"]["encoder_kwargs"] == {"hidden": 64}
