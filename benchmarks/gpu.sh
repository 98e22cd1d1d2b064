#!/usr/bin/env bash
# One call on the GPU machine (device tool): build cmn_ext against that machine's torch, run the GPU tests
# (CUDA vs CPU bit for bit, Triton on the GPU, opcheck on CUDA) and every GPU benchmark; results under $OUT.
#
#   bash benchmarks/gpu.sh --prepare   # HERE, before the call: copy the pure-Python test dependencies the
#                                      # GPU image lacks (hypothesis and its deps) into .device/pylib (git-ignored)
#   bash benchmarks/gpu.sh             # THERE, e.g. run(command="bash benchmarks/gpu.sh", carry=[".device"])
#
# Writes $OUT/build.log, $OUT/gpu_tests.log, $OUT/<device>_<family>.{json,md} and the merged
# $OUT/<device>.{json,md} (commit the merged files under benchmarks/results/).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
  PY=${PYTHON:-python}
  mkdir -p .device/pylib
  "$PY" - <<'PYEOF'
import importlib, os, shutil
for name in ("hypothesis", "sortedcontainers", "attr", "attrs", "exceptiongroup"):
    try:
        mod = importlib.import_module(name)
    except ImportError:
        continue
    src = os.path.dirname(mod.__file__)
    dst = os.path.join(".device", "pylib", name)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    print("copied", name)
PYEOF
  exit 0
fi

OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/.device/pylib${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"

echo "[gpu.sh] build"
start=$SECONDS
if ! pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1; then
  tail -60 "$OUT/build.log"; exit 1
fi
python -c 'import cmn_ext, json; print(json.dumps(cmn_ext.build_info()))' | tee -a "$OUT/build.log"
echo "[gpu.sh] built in $((SECONDS - start)) s"

echo "[gpu.sh] GPU tests"
python -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_triton.py tests/test_opcheck.py \
  > "$OUT/gpu_tests.log" 2>&1
echo "[gpu.sh] tests rc=$?"; tail -25 "$OUT/gpu_tests.log"

parts=()
for fam in binary_conv int8_conv apot; do
  echo "[gpu.sh] bench $fam"
  if path=$(python "benchmarks/bench_${fam}.py" --out "$OUT" | tee "$OUT/bench_${fam}.log" | tail -1); then
    parts+=("$path")
  else
    echo "[gpu.sh] bench $fam failed"; tail -20 "$OUT/bench_${fam}.log"
  fi
done
if (( ${#parts[@]} )); then
  python -c 'import sys; from cmn_ext.bench import gpu; print(gpu.merge(sys.argv[1], sys.argv[2:]))' "$OUT" "${parts[@]}"
fi
echo "[gpu.sh] done in $((SECONDS - start)) s"
