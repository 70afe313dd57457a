#!/usr/bin/env bash
# One short run on a GPU machine (the device tool's H200), prepared ahead of
# time: the benchmarks (B1-B7, bf16) and the study's gpu profile, each under
# its own time limit, every output under $OUT (default ./gpu_out).
#
#   OUT=/tmp/gpu bash scripts/gpu_check.sh            # about 9 minutes
#
# It needs a Python environment with a CUDA jax already in it ($PYTHON, or
# .venv/bin/python): the device machine reaches no package index. What it
# cannot finish in its limit is cut off, and what finished is kept (each
# `mtljax reproduce` resumes when run again).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-gpu_out}"
PYTHON="${PYTHON:-.venv/bin/python}"
mkdir -p "$OUT"
export TFDS_DATA_DIR="${TFDS_DATA_DIR:-$OUT/tfds}"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  "$PYTHON" -c "import jax; print(jax.__version__, jax.devices())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if ! "$PYTHON" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')"; then
  echo "error: jax sees no GPU (see $OUT/env.txt)" >&2
  exit 2
fi
# 1. The benchmarks: B1-B7 on the accelerator, bf16 included (~3 min).
timeout 240 "$PYTHON" scripts/bench.py --only b1,b2,b2b,b3,b6,b7 \
    --out "$OUT/bench_gpu.json" > "$OUT/bench.log" 2>&1
echo "bench rc=$?"
# 2. The study's gpu profile, the experiments in order of what they decide
# (~5 min here; the whole profile is sized for about 10 minutes).
timeout 330 "$PYTHON" -m mtljax reproduce --full --profile gpu \
    --only e3,e5,e9,e1,e2 --workdir "$OUT/reproduce_gpu" \
    > "$OUT/reproduce.log" 2>&1
echo "reproduce rc=$? (124: cut off at its limit; rerun to resume)"
tail -5 "$OUT/reproduce.log"
