#!/usr/bin/env bash
# Everything a session with a GPU has to run, in one call of the `device` tool (repository root):
#
#     bash bench/gpu_check.sh                       # results under $OUT (or /tmp/gpu_check)
#     STAGES=tests bash bench/gpu_check.sh          # one device call (at most 10 minutes) ...
#     STAGES="bench sweep" bash bench/gpu_check.sh  # ... and the next
#
# 1. numbagrad made importable without touching the machine's packages (its numba,
#    numba-cuda and PyTorch CUDA are the ones used); the versions and the GPU printed;
# 2. the CUDA tests on the GPU, no simulator (NUMBAGRAD_TEST_REAL_GPU=1), without the
#    PTX-compile check, which the GPU run makes redundant;
# 3. bench/gpu.py: LeNet-5 at batch 256 and ResNet-18 at 128 against PyTorch, with and without
#    CUDA graphs, the conv kernels against the measured FP32 peak (--json: $OUT/gpu.json);
# 4. the GEMM tile sweep on ResNet-18's conv kernels (--json: $OUT/tiles.json), to choose tiles.
# Each stage has its own time limit, so that a hang in one still leaves the others' results.
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export NUMBAGRAD_CACHE_DIR=${NUMBAGRAD_CACHE_DIR:-/tmp/numbagrad-cache}

# The repository root is the package: a link named numbagrad makes it importable as such.
site=$(mktemp -d)
ln -s "$PWD" "$site/numbagrad"
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    python - <<'EOF'
import importlib
for name in ("numpy", "numba", "numba_cuda", "torch", "scipy", "networkx", "tqdm", "pytest"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except ImportError as e:
        print(name, "MISSING:", e)
import numbagrad
print("numbagrad from", numbagrad.__file__)
EOF
} 2>&1 | tee "$OUT/versions.txt"

STAGES=${STAGES:-tests bench sweep}
if [[ " $STAGES " == *" tests "* ]]; then
    echo "== CUDA tests on the GPU"
    NUMBAGRAD_TEST_REAL_GPU=1 timeout "${TEST_LIMIT:-480}" python -m pytest -q \
        -p no:cacheprovider -m cuda tests/backends --deselect tests/backends/test_cuda_compile.py \
        2>&1 | tee "$OUT/tests.txt" | tail -25
fi
if [[ " $STAGES " == *" bench "* ]]; then
    echo "== bench/gpu.py"
    timeout "${BENCH_LIMIT:-360}" python bench/gpu.py --json "$OUT/gpu.json" "$@" 2>&1 \
        | tee "$OUT/bench.txt" | tail -60
fi
if [[ " $STAGES " == *" sweep "* ]]; then
    echo "== GEMM tile sweep"
    timeout "${SWEEP_LIMIT:-180}" python bench/gpu.py --models resnet18 --no-torch --no-conv \
        --tile-sweep --repeat 5 --json "$OUT/tiles.json" 2>&1 | tee "$OUT/tiles.txt" | tail -60
fi
