#!/usr/bin/env bash
# One-shot GPU check of the engine (issue 6), for an H100/H200 machine without network access.
#
#   bash benchmarks/gpu_check.sh          # from the repository root; results in $OUT (default /tmp/fgbench-gpu-check)
#
# Installs this checkout and the DPSH/CMBH plugins without dependencies, index or build isolation (nothing
# is downloaded; if that fails the packages are used from PYTHONPATH), then runs benchmarks/gpu_check.py under
# a 7.5-minute timeout (the script itself skips what no longer fits in GPU_CHECK_BUDGET_S=420 s).  Every
# number is appended to $OUT/gpu_check.jsonl and $OUT/summary.txt as soon as it is measured; the full log
# is $OUT/gpu_check.log, the environment $OUT/env.txt.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/fgbench-gpu-check}"
export OUT
mkdir -p "$OUT"
START=$(date +%s)

{
  date
  nvidia-smi || true
  python -V
  python -m pip list 2>/dev/null | grep -i -E "^(torch|torchvision|numpy|numba|llvmlite|pluggy|click|filelock|tqdm|scipy|pillow|pandas|tabulate|submitit|fgbench)" || true
} > "$OUT/env.txt" 2>&1

pkgs=(-e .)
for p in plugins/fgbench-dpsh plugins/fgbench-cmbh; do
  [ -d "$p" ] && pkgs+=(-e "$p")
done
timeout 120 python -m pip install --no-deps --no-index --no-build-isolation "${pkgs[@]}" > "$OUT/pip.txt" 2>&1 \
  || echo "pip install failed (see pip.txt); using PYTHONPATH" | tee -a "$OUT/summary.txt"
export PYTHONPATH="$PWD:$PWD/plugins/fgbench-dpsh:$PWD/plugins/fgbench-cmbh${PYTHONPATH:+:$PYTHONPATH}"

LEFT=$(( 470 - ($(date +%s) - START) ))
export GPU_CHECK_BUDGET_S=$(( LEFT > 60 ? LEFT - 40 : 20 ))
timeout "$LEFT" python -u benchmarks/gpu_check.py > "$OUT/gpu_check.log" 2>&1
echo "gpu_check.py exit status $? after $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"
