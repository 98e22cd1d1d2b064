#!/usr/bin/env bash
# One call on the GPU machine (device tool): build cmn_ext against that machine's torch, run the GPU tests
# (CUDA vs CPU bit for bit, Triton on the GPU, opcheck on CUDA) and every GPU benchmark; results under $OUT.
#
#   bash benchmarks/gpu.sh             # there, e.g. run(command="bash benchmarks/gpu.sh"); the GPU image has
#                                      # torch, triton, pytest, xdist and hypothesis, nothing needs carrying
#
# GPU_SH_STAGES picks stages (default "cuda engine triton opcheck bench deploy"; the build always runs).
# "engine": the deploy engine's CUDA tests (epilogue on CUDA, CUDA graph capture of whole deploy models);
# "deploy": benchmarks/bench_deploy.py --device cuda (engines vs cuDNN fp16 channels_last), with the pretrained
# ResNet-20 when .device/resnet20.th was carried (cp ../shared/weights/resnet20-*.th .device/resnet20.th).
# Writes $OUT/device.txt, build.log, tests.log, bench.log and the merged $OUT/<device>.{json,md} (commit these
# two under benchmarks/results/). GPU_SH_FAMILIES picks benchmark families (default all three).
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_build.sh

OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
TMP=$(mktemp -d)  # logs and per-family parts; only the merged files go to $OUT (the device returns 8 files)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
start=$SECONDS
device_build "$OUT/build.log" || exit 1

# Each stage has its own time limit so that one slow or hanging stage still leaves the others' results under
# $OUT (a device call is limited to 10 minutes). A kernel fault poisons the CUDA context of its process, so the
# test files run in separate processes, with synchronous launches to name the faulting test.
STAGES=${GPU_SH_STAGES:-"cuda engine triton opcheck bench deploy"}
run_tests() {  # name, limit (s), pytest arguments...
  local name=$1 limit=$2; shift 2
  echo "[gpu.sh] tests $name"
  CUDA_LAUNCH_BLOCKING=1 timeout "$limit" python -m pytest -q -p no:cacheprovider -n 4 --tb=short "$@" \
    > "$TMP/tests_$name.log" 2>&1
  echo "[gpu.sh] tests $name rc=$?"; grep -E "^(FAILED|ERROR)" "$TMP/tests_$name.log" | head -20
  tail -3 "$TMP/tests_$name.log"
  { echo "===== tests $name"; cat "$TMP/tests_$name.log"; } >> "$OUT/tests.log"
}
OPS=(tests/test_op_pack.py tests/test_op_binary_conv2d.py tests/test_op_int8_conv2d.py tests/test_op_apot.py)
[[ $STAGES == *cuda* ]] && run_tests cuda 200 "${OPS[@]}" tests/test_errors.py tests/test_build.py -m "not triton"
[[ $STAGES == *engine* ]] && run_tests engine 150 tests/test_engine.py tests/test_epilogue.py -k "cuda"
[[ $STAGES == *triton* ]] && run_tests triton 150 "${OPS[@]}" -m triton
[[ $STAGES == *opcheck* ]] && run_tests opcheck 90 tests/test_opcheck.py -k "cuda or triton"
if [[ $STAGES == *deploy* ]]; then
  echo "[gpu.sh] deploy benchmark"
  weights=(); [[ -f .device/resnet20.th ]] && weights=(--weights .device/resnet20.th)
  timeout "${DEPLOY_LIMIT:-150}" python benchmarks/bench_deploy.py --device cuda --no-onnx --rounds 5 \
    "${weights[@]}" --out "$OUT" > "$TMP/deploy.log" 2>&1
  echo "[gpu.sh] deploy rc=$?"; grep "^|" "$TMP/deploy.log" | head -20
  { echo "===== deploy"; cat "$TMP/deploy.log"; } >> "$OUT/bench.log"
fi
[[ $STAGES == *bench* ]] || exit 0

parts=()
for fam in ${GPU_SH_FAMILIES:-binary_conv int8_conv apot}; do
  echo "[gpu.sh] bench $fam"
  if path=$(timeout "${BENCH_LIMIT:-120}" python "benchmarks/bench_${fam}.py" --out "$TMP" \
             | tee "$TMP/bench_${fam}.log" | tail -1) && [[ $path == *.json ]]; then
    parts+=("$path")
    # merged after every family, so a later stage that runs out of time leaves the earlier results
    python -c 'import sys; from cmn_ext.bench import gpu; print(gpu.combine_parts(sys.argv[1], sys.argv[2:]))' \
      "$OUT" "${parts[@]}"
  else
    echo "[gpu.sh] bench $fam failed"; tail -20 "$TMP/bench_${fam}.log"
  fi
  { echo "===== bench $fam"; cat "$TMP/bench_${fam}.log"; } >> "$OUT/bench.log"
done
echo "[gpu.sh] done in $((SECONDS - start)) s"
