#!/usr/bin/env bash
# One command that checks and measures everything GPU-related (does it work on a GPU, and how fast?). Everything goes under $OUT:
# gpu_check.json (all results), summary.md (one page), one log per step. benchmarks/gpu_check.sh forwards
# here, so either path runs it.
#
#   OUT=/tmp/out bash benchmarks/gpu_check.sh            # on a GPU machine: at most ~8 min on one H100/H200
#   OUT=/tmp/out bash benchmarks/gpu_check.sh --dry-run  # the same steps at tiny sizes on the CPU (tests/test_speed_defaults.py)
#
# Steps, each bounded by `timeout` so the whole run fits in 8 minutes:
#   setup        installs what the GPU machine lacks (lightly, faiss, hydra, omegaconf) from the wheels that
#                ../shared/tools/gpu-stage staged under .gpu/ (by sourcing .gpu/device-setup.sh, which also
#                unpacks staged Tiny ImageNet shards into /tmp/data/tiny-imagenet-200), then installs this
#                project without dependencies (methods/ and configs/ are mapped into the package by pyproject)
#   pytest_gpu   python -m pytest -m gpu (tests/test_gpu.py)
#   bench_speed  bench_speed.py: ResNet-18 (small stem), 32x32, batch 512, 50k images, ours vs lightly reference
#   full_run     bench_speed.py --full-run: one whole 50k-image epoch (kNN monitor, checkpoints, logs) of each
#   bench_eval   bench_eval.py on the GPU (kNN backends, probe, extraction of 50k images)
# GPU_CHECK_SKIP="full_run ..." skips steps, GPU_CHECK_EVAL_SKIP="probe" parts of bench_eval (the test
# suite's dry run keeps only setup and bench_eval, to stay short).
set -uo pipefail
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)  # this file is benchmarks/gpu/gpu_check.sh
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SKIP=" ${GPU_CHECK_SKIP:-} "
: > "$OUT/steps.tsv"
START=$(date +%s)

step() {  # step NAME TIMEOUT_S COMMAND...: runs it, logs to $OUT/NAME.log, records "name rc seconds"
  local name=$1 limit=$2; shift 2
  if [[ "$SKIP" == *" $name "* ]]; then echo "== $name: skipped"; return 0; fi
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$OUT/steps.tsv"
  echo "   rc=$rc, $(( $(date +%s) - t0 )) s; tail:"; tail -n 3 "$OUT/$name.log" | sed 's/^/   | /'
}

setup() {
  if [ "$DRY" = 1 ]; then  # nothing to install on the development machine; check that it imports
    $PY -c "import contrastive.core.hardware as h; print('auto on this CPU:', h.describe())"
    return
  fi
  if [ -f .gpu/device-setup.sh ]; then source .gpu/device-setup.sh; else echo "no .gpu/device-setup.sh: nothing staged"; fi
  export PYTHONPATH
  $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . \
    || $PY -m pip install -q --no-deps --no-build-isolation --no-index --target /tmp/site . \
    || return 1
  $PY -c "import torch, contrastive.methods, contrastive.configs, lightly, hydra, faiss; print(torch.__version__, torch.cuda.get_device_name())"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
}
step setup 60 bash -c "$(declare -f setup); DRY=$DRY PY=$PY; setup"
# device-setup.sh's PYTHONPATH (the installed wheels) for the steps below
[ "$DRY" = 0 ] && [ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

if [ "$DRY" = 1 ]; then
  step pytest_gpu 120 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py --junitxml="$OUT/pytest_gpu.xml"
  step bench_speed 120 $PY benchmarks/speed/bench_speed.py --device cpu --num-images 64 --batch-size 16 --width 4 --steps 1 \
    --repeats 1 --warmup 1 --workers 0 --json "$OUT/bench_speed.json"
  step full_run 300 $PY benchmarks/speed/bench_speed.py --full-run --device cpu --num-images 64 --batch-size 32 --width 4 \
    --epochs 1 --repeats 1 --workers 0 --json "$OUT/full_run.json" --override dataset.num_val=32 knn.k=10 \
    scheduler.warmup_epochs=0 knn.random_init_baseline=false
  step bench_eval 120 $PY benchmarks/speed/components/bench_eval.py --num-train 512 --queries 64 --dim 16 --repeats 1 \
    --extract-images 16 --batch-size 16 --out "$OUT/bench_eval.json" ${GPU_CHECK_EVAL_SKIP:+--skip $GPU_CHECK_EVAL_SKIP}
else
  step pytest_gpu 170 $PY -m pytest -q -m gpu -p no:cacheprovider --junitxml="$OUT/pytest_gpu.xml"
  step bench_speed 80 $PY benchmarks/speed/bench_speed.py --backbone resnet18 --batch-size 512 --num-images 50000 \
    --device cuda --steps 20 --repeats 3 --warmup 5 --workers "$(nproc)" --json "$OUT/bench_speed.json"
  step full_run 140 $PY benchmarks/speed/bench_speed.py --full-run --backbone resnet18 --batch-size 512 --num-images 50000 \
    --device cuda --epochs 1 --repeats 1 --workers "$(nproc)" --json "$OUT/full_run.json" \
    --override scheduler.warmup_epochs=0 knn.every_n_epochs=1
  step bench_eval 60 $PY benchmarks/speed/components/bench_eval.py --repeats 3 --extract-images 50000 --out "$OUT/bench_eval.json"
fi

$PY benchmarks/gpu/gpu_check_report.py "$OUT" --dry-run "$DRY" --seconds "$(( $(date +%s) - START ))"
