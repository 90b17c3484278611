#!/usr/bin/env bash
# GPU benchmark at realistic scale (issue #18): one command, one run, results in $OUT.
#
#   bash benchmarks/gpu_bench.sh            # on the GPU machine, from the repository root (or anywhere)
#   bash benchmarks/gpu_bench.sh --tiny     # the same code paths on the CPU in seconds
#
# Uses this checkout through PYTHONPATH (repository root + the five plugins; nothing is installed or
# downloaded; FGBENCH_GPU_BENCH_PIP=1 additionally tries `pip install --no-deps --no-index
# --no-build-isolation -e` of them, bounded to 60 s).  The whole run, this script included, is held to
# FGBENCH_GPU_BENCH_TOTAL_S seconds (default 480; tiny 900): benchmarks/gpu_bench.py gets what is left minus
# a margin as its budget and skips, most valuable first, what no longer fits; it is killed at the total.
# Written to $OUT (default /tmp/fgbench-gpu-bench):
#   results.jsonl   one JSON object per section, appended and fsynced as soon as it is measured
#   summary.md      the headline numbers and every section's status, rewritten after each section
#   env.txt         nvidia-smi, python, packages;  gpu_bench.log  the full log;  records/  the e2e run record
# The synthetic CUB-layout data set and its decoded cache go to FGBENCH_GPU_BENCH_DATA
# (default /tmp/fgbench-gpu-bench-data), never into $OUT.
set -u
cd "$(dirname "$0")/.."
START=$(date +%s)
TINY=0
for arg in "$@"; do [ "$arg" = "--tiny" ] && TINY=1; done
[ "${FGBENCH_GPU_BENCH_TINY:-0}" = "1" ] && TINY=1
OUT="${OUT:-/tmp/fgbench-gpu-bench}"
export OUT
mkdir -p "$OUT"
if [ "$TINY" = 1 ]; then TOTAL="${FGBENCH_GPU_BENCH_TOTAL_S:-900}"; else TOTAL="${FGBENCH_GPU_BENCH_TOTAL_S:-480}"; fi
PY="${PYTHON:-python}"

{
  date
  echo "repo: $PWD  total budget: ${TOTAL} s  tiny: ${TINY}"
  [ "$TINY" = 1 ] || nvidia-smi || true
  "$PY" -V
  nproc
  free -g 2>/dev/null | head -2
  "$PY" -m pip list 2>/dev/null | grep -i -E "^(torch|torchvision|numpy|numba|llvmlite|pluggy|click|filelock|tqdm|scipy|pillow|pandas|tabulate|fgbench)" || true
} > "$OUT/env.txt" 2>&1

PP="$PWD"
for p in plugins/fgbench-*; do [ -d "$p" ] && PP="$PP:$PWD/$p"; done
export PYTHONPATH="$PP${PYTHONPATH:+:$PYTHONPATH}"
if [ "${FGBENCH_GPU_BENCH_PIP:-0}" = "1" ]; then
  pkgs=(-e .)
  for p in plugins/fgbench-*; do [ -d "$p" ] && pkgs+=(-e "$p"); done
  timeout 60 "$PY" -m pip install --no-deps --no-index --no-build-isolation "${pkgs[@]}" > "$OUT/pip.txt" 2>&1 \
    || echo "pip install failed (see pip.txt); using PYTHONPATH" >> "$OUT/env.txt"
fi

LEFT=$(( TOTAL - ($(date +%s) - START) ))
[ "$LEFT" -lt 30 ] && LEFT=30
export FGBENCH_GPU_BENCH_BUDGET_S=$(( LEFT - 25 ))
timeout -k 10 "$LEFT" "$PY" -u benchmarks/gpu_bench.py --out "$OUT" "$@" > "$OUT/gpu_bench.log" 2>&1
RC=$?
ELAPSED=$(( $(date +%s) - START ))
if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
  "$PY" benchmarks/gpu_bench.py --out "$OUT" --summarize --note "killed at the total budget of ${TOTAL} s (exit ${RC})" \
    >> "$OUT/gpu_bench.log" 2>&1
fi
echo "gpu_bench.py exit status ${RC} after ${ELAPSED} s; results in ${OUT}/results.jsonl and ${OUT}/summary.md"
exit "$RC"
