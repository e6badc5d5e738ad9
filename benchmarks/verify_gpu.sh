#!/usr/bin/env bash
# Every GPU check in one call, under 8 minutes on one H100 from a bare start:
#   OUT=/path/to/results bash benchmarks/verify_gpu.sh
# The lent machine has torch (CUDA), triton, onnx, onnxruntime and numpy, no network, and no
# rasterio, OpenVINO or TensorRT. What else copgen-rt and its tests need travels with the repository
# as wheels in the git-ignored .whl/ (43 MiB; the list and the command that fetches them, run on a
# machine with PyPI, are in benchmarks/gpu_wheels.txt):
#   pip download --no-deps --only-binary=:all: --python-version 3.11 \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl -r benchmarks/gpu_wheels.txt
# Steps, each under its own time limit (they add up to 7 min 20 s, the installs included):
#   1. the wheels into /tmp/site, copgen-rt itself (editable, no dependencies)        60 s
#   2. tests/test_gpu.py: CUDA-graph replay, bf16, Triton on the device, pipeline vs CPU  150 s
#   3. benchmarks/gpu_calls.py: one copgen-base call per engine and precision,         230 s
#      CUDA graphs and eager, each checked against torch fp32
# Everything (log, per-step times, pytest's junit XML, the call table) goes under $OUT
# (default benchmarks/results/verify-gpu). Exit status 0 only if every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/verify-gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/verify_gpu.log") 2>&1
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
status=0

step() {  # step NAME LIMIT_S COMMAND...: run under a time limit, record its status and seconds
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@"
  rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - start))" | tee -a "$OUT/steps.txt"
  [ "$rc" = 0 ] || status=1
  return "$rc"
}

install() {
  if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl || return 1
  else
    echo "no .whl/: fetch the wheels first (benchmarks/gpu_wheels.txt); trying with what is installed"
  fi
  python3 -m pip install -q --no-deps --no-build-isolation --no-index -e .
}

: > "$OUT/steps.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
step install 60 install || { echo "verify_gpu: cannot install copgen-rt"; exit 1; }
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
step gpu-tests 150 python3 -m pytest -q -rs -p no:cacheprovider --junitxml="$OUT/gpu-tests.xml" tests/test_gpu.py
step gpu-calls 230 python3 benchmarks/gpu_calls.py --out "$OUT"
echo "verify_gpu: $([ $status = 0 ] && echo all checks passed || echo SOME CHECKS FAILED) (${SECONDS} s)"
exit $status
