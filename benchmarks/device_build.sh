# Sourced by benchmarks/gpu.sh and benchmarks/repro_gpu.sh on the GPU machine: puts the image's python3 first,
# builds cmn_ext against the image's torch (all cores, sm_90a), logs to $1, prints the build information.
# Returns non-zero (after printing the log's tail) when the build fails.
PATH="$(dirname "$(command -v python3)"):$PATH"
python() { command python3 "$@"; }  # "python" may be missing or another interpreter there
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a}

device_build() {  # log file
  local log=$1 start=$SECONDS
  # The GPU image sets CXX to its own /opt/gcc; build with the system compilers, the ones its libstdc++ belongs
  # to (the module exports PyInit__C alone either way: tests/test_build.py).
  if [[ -x /usr/bin/g++ && -x /usr/bin/gcc ]]; then export CC=/usr/bin/gcc CXX=/usr/bin/g++; fi
  echo "[build] cmn_ext"
  if ! python -m pip install --no-build-isolation --no-deps -e . > "$log" 2>&1; then
    tail -60 "$log"; return 1
  fi
  python -c 'import cmn_ext, json; print(json.dumps(cmn_ext.build_info()))' | tee -a "$log"
  echo "[build] done in $((SECONDS - start)) s"
}
