#!/usr/bin/env bash
# Every GPU check and timing in one call, about 9 minutes on an H100/H200:
#   bash benchmarks/verify_gpu.sh
# 1. tests/test_gpu.py: CUDA-graph replay, bf16, the Triton backend, the pipeline on CUDA vs CPU;
# 2. benchmarks/kernels_gpu.py: each Triton kernel against PyTorch at the real shapes;
# 3. benchmarks/gpu.py --quick: the denoiser per backend, tiles per preset, with checks.
# Results: benchmarks/results/{gpu,kernels}-<gpu>.{json,md}, copied to $OUT when it is set.
# The machine needs torch (CUDA) and triton. Packages it lacks (e.g. rasterio, for the scene
# part of gpu.py) travel as wheels in .whl/: they are installed into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || { echo "cannot install copgen-rt"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
status=0
timeout 150 python3 -m pytest -q -rs tests/test_gpu.py || status=1
COPGEN_KERNEL_BENCH_BUDGET_S=180 timeout 260 python3 benchmarks/kernels_gpu.py || status=1
timeout 150 python3 benchmarks/gpu.py --quick || status=1
if [ -n "${OUT:-}" ]; then cp benchmarks/results/gpu-* benchmarks/results/kernels-* "$OUT"/ 2>/dev/null; fi
echo "verify_gpu: $([ $status = 0 ] && echo all checks passed || echo SOME CHECKS FAILED)"
exit $status
