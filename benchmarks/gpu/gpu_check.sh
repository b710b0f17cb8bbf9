#!/usr/bin/env bash
# One command that checks and measures everything GPU-related (does it work on a GPU, and how fast?). Everything goes
# under $OUT (or --out DIR): gpu_check.json (all results), summary.md (one page), steps.tsv, one log per step, and each
# step's result file. benchmarks/gpu_check.sh forwards here, so either path runs it.
#
#   OUT=/tmp/out bash benchmarks/gpu_check.sh                  # on a GPU machine: at most 9 min (limits below) on one H100/H200
#   bash benchmarks/gpu_check.sh --rehearse --out /tmp/reh     # the real check's every step and command on the CPU (below)
#   bash benchmarks/gpu_check.sh --rehearse --print-plan       # the step commands, not run (tests/test_gpu_check.py)
#   OUT=/tmp/out bash benchmarks/gpu_check.sh --dry-run        # the script's plumbing at tiny sizes (tests/test_speed_defaults.py)
#
# Steps, each bounded by `timeout` (SIGINT at its limit, so pytest still writes its junit XML and a benchmark its
# traceback; SIGKILL 10 s later). The report is rewritten after every step, so what ran survives a lost device:
#   setup        installs what the GPU machine lacks (lightly, faiss, hydra, omegaconf) from the wheels that
#                ../shared/tools/gpu-stage staged under .gpu/ (by sourcing .gpu/device-setup.sh, which also
#                unpacks staged Tiny ImageNet shards into /tmp/data/tiny-imagenet-200), then installs this
#                project without dependencies (methods/ and configs/ are mapped into the package by pyproject)
#   pytest_gpu   python -m pytest -n 0 -m gpu tests/test_gpu.py (one process: no xdist workers collecting the suite)
#   bench_speed  bench_speed.py: ResNet-18 (small stem), 32x32, batch 512, 50k images, ours vs lightly reference
#   full_run     bench_speed.py --full-run: one whole 50k-image epoch (kNN monitor, checkpoints, logs) of each
#   bench_eval   bench_eval.py on the GPU (kNN backends, probe, extraction of 50k images)
# GPU_CHECK_SKIP="full_run ..." skips steps, GPU_CHECK_EVAL_SKIP="probe" parts of bench_eval, GPU_CHECK_LIMIT_SCALE=N
# multiplies every limit (default 1: a rehearsal on a CPU that others load needs more).
#
# --rehearse runs the real steps' commands, configs and output files on the CPU. Its stubs are the block marked
# REHEARSAL STUBS below and nothing else: the device (--device cpu, CONTRASTIVE_GPU_REHEARSE=1 for tests/test_gpu.py,
# whose own stubs are in its header), setup's install (skipped: it would change this machine) and the sizes that 2 cores
# cannot run in minutes. `--print-plan` prints both modes' commands; tests/test_gpu_check.py checks they differ only there.
set -uo pipefail
MODE=real PLAN=0
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) MODE=dry ;;
    --rehearse) MODE=rehearse ;;
    --print-plan) PLAN=1 ;;
    --out) [ $# -ge 2 ] || { echo "gpu_check.sh: --out needs a folder" >&2; exit 2; }; OUT=$2; shift ;;
    --out=*) OUT=${1#--out=} ;;
    *) echo "gpu_check.sh: unknown argument '$1'; valid: --rehearse, --dry-run, --out DIR, --print-plan" >&2; exit 2 ;;
  esac
  shift
done
ROOT=$(cd "$(dirname "$0")/../.." && pwd)  # this file is benchmarks/gpu/gpu_check.sh
cd "$ROOT"
OUT=$(mkdir -p "${OUT:-$ROOT/gpu_check_out}" && cd "${OUT:-$ROOT/gpu_check_out}" && pwd)
PY=${PYTHON:-python3}
SKIP=" ${GPU_CHECK_SKIP:-} "
START=$(date +%s)

# The real check's settings (what a GPU runs).
DEVICE=cuda INSTALL=1
IMAGES=50000 BATCH=512 SPEED_STEPS=20 REPEATS=3 WARMUP=5 WORKERS=$(nproc)
NUM_VAL=1000 EVAL_TRAIN=50000 EVAL_QUERIES=10000 EVAL_DIM=512
STUBS="DEVICE INSTALL IMAGES BATCH SPEED_STEPS REPEATS WARMUP WORKERS NUM_VAL EVAL_TRAIN EVAL_QUERIES EVAL_DIM"
if [ "$MODE" = rehearse ]; then
  # ---- REHEARSAL STUBS: the only differences from the real check ----
  DEVICE=cpu                  # the CPU stands in for the GPU
  INSTALL=0                   # setup installs nothing here (the worktree's environment has everything; its pip
                              # cannot build this project without `wheel`): it checks the imports
  export CONTRASTIVE_GPU_REHEARSE=1             # tests/test_gpu.py on the CPU
  IMAGES=256 BATCH=32 SPEED_STEPS=2 REPEATS=1 WARMUP=1 WORKERS=2  # sizes 2 cores run in seconds per step
  NUM_VAL=128 EVAL_TRAIN=1024 EVAL_QUERIES=128 EVAL_DIM=64
  # ---- end of the stubs ----
fi

if [ "$PLAN" = 1 ]; then  # the stubs' values in this mode, then each step as "step<TAB>name<TAB>limit<TAB>command"
  for v in $STUBS; do printf 'stub\t%s\t%s\n' "$v" "${!v}"; done
  step() { local name=$1 limit=$2; shift 2; local command="$*"; printf 'step\t%s\t%s\t%s\n' "$name" "$limit" "${command//$'\n'/ }"; }
else
  : > "$OUT/steps.tsv"
  source benchmarks/gpu/steps.sh  # step NAME LIMIT COMMAND... and report
fi

setup() {
  if [ "$DRY" = 1 ]; then  # nothing to install on the development machine; check that it imports
    $PY -c "import contrastive.core.hardware as h; print('auto on this CPU:', h.describe())"
    return
  fi
  if [ -f .gpu/device-setup.sh ]; then source .gpu/device-setup.sh; else echo "no .gpu/device-setup.sh: nothing staged"; fi
  export PYTHONPATH
  if [ "$INSTALL" = 1 ]; then
    $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . \
      || $PY -m pip install -q --no-deps --no-build-isolation --no-index --target /tmp/site . \
      || return 1
  fi
  $PY -c "import torch, contrastive.methods, contrastive.configs, lightly, hydra, faiss; print(torch.__version__, \
torch.cuda.get_device_name() if '$DEVICE' == 'cuda' else 'cpu')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
}
DRY=$([ "$MODE" = dry ] && echo 1 || echo 0)
step setup 60 bash -c "$(declare -f setup); DRY=$DRY PY=$PY DEVICE=$DEVICE INSTALL=$INSTALL; setup"
# device-setup.sh's PYTHONPATH (the installed wheels) for the steps below
[ "$MODE" = real ] && [ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

if [ "$MODE" = dry ]; then
  step pytest_gpu 120 $PY -m pytest -n 0 -q -m gpu -p no:cacheprovider tests/test_gpu.py --junitxml="$OUT/pytest_gpu.xml"
  step bench_speed 120 $PY benchmarks/speed/bench_speed.py --device cpu --num-images 64 --batch-size 16 --width 4 --steps 1 \
    --repeats 1 --warmup 1 --workers 0 --json "$OUT/bench_speed.json"
  step full_run 300 $PY benchmarks/speed/bench_speed.py --full-run --device cpu --num-images 64 --batch-size 32 --width 4 \
    --epochs 1 --repeats 1 --workers 0 --json "$OUT/full_run.json" --override dataset.num_val=32 knn.k=10 \
    scheduler.warmup_epochs=0 knn.random_init_baseline=false
  step bench_eval 120 $PY benchmarks/speed/components/bench_eval.py --num-train 512 --queries 64 --dim 16 --repeats 1 \
    --extract-images 16 --batch-size 16 --out "$OUT/bench_eval.json" ${GPU_CHECK_EVAL_SKIP:+--skip $GPU_CHECK_EVAL_SKIP}
else  # the real check, and its rehearsal on the CPU (the stubs above): limits sum to 490 s, 540 s with the kill grace
  step pytest_gpu 180 $PY -m pytest -n 0 -q -m gpu -p no:cacheprovider tests/test_gpu.py --junitxml="$OUT/pytest_gpu.xml"
  step bench_speed 80 $PY benchmarks/speed/bench_speed.py --backbone resnet18 --batch-size "$BATCH" --num-images "$IMAGES" \
    --device "$DEVICE" --steps "$SPEED_STEPS" --repeats "$REPEATS" --warmup "$WARMUP" --workers "$WORKERS" --json "$OUT/bench_speed.json"
  step full_run 120 $PY benchmarks/speed/bench_speed.py --full-run --backbone resnet18 --batch-size "$BATCH" --num-images "$IMAGES" \
    --device "$DEVICE" --epochs 1 --repeats 1 --workers "$WORKERS" --json "$OUT/full_run.json" \
    --override scheduler.warmup_epochs=0 knn.every_n_epochs=1 "dataset.num_val=$NUM_VAL"
  step bench_eval 50 $PY benchmarks/speed/components/bench_eval.py --num-train "$EVAL_TRAIN" --queries "$EVAL_QUERIES" \
    --dim "$EVAL_DIM" --repeats "$REPEATS" --extract-images "$IMAGES" --out "$OUT/bench_eval.json" \
    ${GPU_CHECK_EVAL_SKIP:+--skip $GPU_CHECK_EVAL_SKIP}
fi

[ "$PLAN" = 1 ] || report
