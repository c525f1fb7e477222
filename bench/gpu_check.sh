#!/usr/bin/env bash
# One-shot GPU check for t2arec_fast's Triton kernels, for a bare, offline CUDA machine with python3, torch, triton,
# setuptools and pybind11 present. Run from anywhere:   bash bench/gpu_check.sh
#
# Steps (each time-boxed; a failing step is recorded and the script goes on): nvidia-smi; versions; make the
# package importable (editable install, else a staged copy on PYTHONPATH); pytest tests/ops and the compile tests
# on CUDA (no interpreter); bench.bench_scan (Triton vs eager vs torch.compile vs fla's chunk_simple_gla, whose
# wrapper is checked against our reference first); bench.bench_ttt (eager vs compiled); bench.bench_epoch (one
# training epoch at the ML-1M shape, eager vs compiled, float32 and bf16 autocast); bench.bench_device_serving
# (device-tier serving events/s, p50/p99 at batch 1, 64, 4096); then bench_scan's table and, LAST, one table of
# every issue-17 target beside its measurement (bench.gpu_summary).
#
# GPU_CHECK_DRY=1: the same steps on CPU with tiny shapes and the kernels in Triton's interpreter — a session
# without a GPU runs this to check the script end to end (numbers not to quote).
# Everything is logged to ${OUT:-bench/results}/gpu_check.log next to the benchmarks' JSON.
#
# Optional peer kernels: wheels in <repo>/.whl/ (git-ignored; `bash bench/fetch_peer_wheels.sh` downloads
# flash-linear-attention's fla-core and einops there) are installed into a private --target directory first, so that
# bench_scan.py can time fla's simple_gla beside ours. Carry `.whl` with the checkout to an offline machine.
#
# Environment knobs: GPU_CHECK_BUDGET_S (whole-script wall-clock cap, default 450: under 8 minutes with start-up),
# GPU_CHECK_SWEEP=1 (also sweep the kernels' launch shapes), GPU_CHECK_DRY=1 (above), PYTHON (default python3).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT_DIR="${OUT:-$ROOT/bench/results}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
: > "$LOG"
PY="${PYTHON:-python3}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-450}"
DRY="${GPU_CHECK_DRY:-0}"
export PYTHONUNBUFFERED=1
if [[ "$DRY" == 1 ]]; then
    export TRITON_INTERPRET=1   # no GPU: the kernels run in Triton's interpreter
    export CUDA_VISIBLE_DEVICES=""
else
    unset TRITON_INTERPRET      # the kernels must run natively, not in Triton's interpreter
    export T2AREC_RUN_SLOW=1    # the large L=200 test cases take seconds on a GPU
fi
STEPS=()

log() { echo "$*" | tee -a "$LOG"; }

# run_step NAME LIMIT_S CMD... : run CMD under `timeout`, capped by what is left of the budget; record the status.
run_step() {
    local name=$1 limit=$2; shift 2
    local left=$((BUDGET_S - SECONDS))
    if (( left < 10 )); then
        STEPS+=("$(printf '%-12s %-9s %5s' "$name" "no-time" "-")"); log "=== $name skipped: budget spent"; return 0
    fi
    (( limit > left )) && limit=$left
    log "=== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --kill-after=5 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]} status=ok
    (( rc == 124 || rc == 137 )) && status=timeout
    (( rc != 0 && rc != 124 && rc != 137 )) && status="fail($rc)"
    STEPS+=("$(printf '%-12s %-9s %4ss' "$name" "$status" "$((SECONDS - t0))")")
    return 0
}

import_ok() { (cd /tmp && "$PY" -c "import t2arec_fast.triton_kernels.selective_scan, t2arec_fast.ops") >>"$LOG" 2>&1; }

# Make `t2arec_fast` and `t2arec_fast.triton_kernels` importable. triton_kernels/ sits at the repository root and is
# mapped into the package by setup.py, so a bare PYTHONPATH=. is not enough.
make_importable() {
    run_step install 90 "$PY" -m pip install --no-deps --no-build-isolation --use-pep517 --no-input -q -e .
    if import_ok; then log "import: editable install works"; INSTALL_MODE=editable; return; fi
    log "import: editable install unusable; staging a copy of the package on PYTHONPATH"
    run_step build_ext 60 "$PY" setup.py build_ext --inplace   # the C++ cache; the kernels do not need it
    STAGE="$(mktemp -d)"
    cp -r "$ROOT/t2arec_fast" "$STAGE/"
    rm -rf "$STAGE/t2arec_fast/triton_kernels"
    cp -r "$ROOT/triton_kernels" "$STAGE/t2arec_fast/triton_kernels"
    export PYTHONPATH="$STAGE${PYTHONPATH:+:$PYTHONPATH}"
    INSTALL_MODE=staged
    import_ok && log "import: staged copy works ($STAGE)" || log "import: STILL FAILING (see above)"
}

# `python -P` keeps the current directory off sys.path, so the repository's own t2arec_fast/ (which lacks the
# triton_kernels mapping) cannot shadow the installed or staged package. The benchmarks are the `bench` package:
# a folder holding only a link to bench/ goes on PYTHONPATH, so that `python -P -m bench.<name>` finds them.
PYRUN=("$PY")
"$PY" -P -c pass 2>/dev/null && PYRUN=("$PY" -P)
BENCH_PATH="$(mktemp -d)"
ln -s "$ROOT/bench" "$BENCH_PATH/bench"

run_step nvidia-smi 20 nvidia-smi
run_step versions 40 "$PY" -c "
import sys, platform, torch, triton
print('python', sys.version.split()[0], platform.machine())
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
print('triton', triton.__version__)
print('device', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
INSTALL_MODE=none
make_importable
if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
    run_step peer_wheels 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/t2arec_peer_site "$ROOT"/.whl/*.whl
    export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}/tmp/t2arec_peer_site"
fi
# pytest-xdist, when present, compiles the many kernel variants of the tests in parallel
XDIST=()
"$PY" -c "import xdist" 2>/dev/null && XDIST=(-n 8)
if [[ "$DRY" == 1 ]]; then
    run_step pytest 240 "${PYRUN[@]}" -m pytest tests/ops/test_state_step_triton.py tests/ops/test_selective_scan_triton.py \
        -q -x -p no:cacheprovider -k "L1 or opcheck or one_op or pooled"
    export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$BENCH_PATH"
    run_step bench_scan 120 "${PYRUN[@]}" -m bench.bench_scan --quick --out "$OUT_DIR"
    run_step bench_ttt 120 "${PYRUN[@]}" -m bench.bench_ttt --out "$OUT_DIR" --cpu-batch 8 --length 20 --items 50 \
        --reps 1 --no-profile --total-budget 60 --compile-backend aot_eager
    run_step bench_epoch 200 "${PYRUN[@]}" -m bench.bench_epoch --dry --out "$OUT_DIR"
    run_step serving 120 "${PYRUN[@]}" -m bench.bench_device_serving --dry --out "$OUT_DIR"
else
    run_step pytest 110 "${PYRUN[@]}" -m pytest tests/ops -q -x -p no:cacheprovider --durations=8 "${XDIST[@]}"
    BENCH_ARGS=(--out "$OUT_DIR" --compile-timeout 40)
    [[ "${GPU_CHECK_SWEEP:-0}" == 1 ]] && BENCH_ARGS+=(--sweep --sweep-budget 60)
    export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$BENCH_PATH"
    run_step bench_scan 110 "${PYRUN[@]}" -m bench.bench_scan "${BENCH_ARGS[@]}"
    run_step bench_ttt 70 "${PYRUN[@]}" -m bench.bench_ttt --out "$OUT_DIR" --total-budget 50
    run_step bench_epoch 100 "${PYRUN[@]}" -m bench.bench_epoch --out "$OUT_DIR"
    run_step serving 45 "${PYRUN[@]}" -m bench.bench_device_serving --out "$OUT_DIR" --reps 100
fi

# ---- summary, printed last --------------------------------------------------------------------------------------
{
    echo
    echo "================ GPU check summary (install: $INSTALL_MODE, ${SECONDS}s total) ================"
    printf '%s\n' "${STEPS[@]}"
    grep -E '^[0-9]+ (passed|failed)|^(FAILED|ERROR) |[0-9]+ (passed|failed|error)' "$LOG" | tail -n 3
    "${PYRUN[@]}" -m bench.bench_scan --summary "$OUT_DIR/bench_scan.json" 2>/dev/null \
        || "${PYRUN[@]}" -m bench.bench_scan --summary "$OUT_DIR/bench_scan_cpu.json" 2>/dev/null \
        || echo "(no bench_scan JSON)"
    [[ "$DRY" == 1 ]] && echo "DRY RUN (GPU_CHECK_DRY=1): CPU, tiny shapes, interpreter — numbers not to quote"
    "${PYRUN[@]}" -m bench.gpu_summary "$OUT_DIR" \
        --pytest "$(grep -E '^[0-9]+ (passed|failed)|[0-9]+ (passed|failed|error)' "$LOG" | tail -n 1)"
} 2>&1 | tee -a "$LOG"
