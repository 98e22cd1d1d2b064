#!/usr/bin/env bash
# One of the papers' methods reproduced on the GPU machine within one device call (about 8 minutes on an H200,
# build included), from the pretrained ResNet-20 and the CIFAR-10 JPEGs of ../shared:
#
#   bash benchmarks/repro_gpu.sh prepare          # HERE: copy them into .device/repro (git-ignored), once
#   bash benchmarks/repro_gpu.sh cmn|ppq|spq|apq  # THERE: run(command=..., carry=[".device/repro"])
#   REPRO_DRY_RUN=1 bash benchmarks/repro_gpu.sh cmn   # anywhere: the same steps with tiny settings on the
#                                                 # embedded digits set (tests/test_repro.py runs this)
#
# Writes under $OUT: <method>.json (device, versions, epochs, wall time, accuracies, costs, the whole result),
# the run's plots, <method>.log, and run_<method>.tar.gz (checkpoints <= 16 MiB). To continue a run that ran
# out of time, copy that archive to .device/repro/ and call again: finished steps are reused.
# REPRO_LIMIT (seconds, default 480) stops the run in time to collect and pack whatever it finished.
set -uo pipefail
cd "$(dirname "$0")/.."
METHOD=${1:?usage: repro_gpu.sh prepare|cmn|ppq|spq|apq}
CARRY=.device/repro

if [[ $METHOD == prepare ]]; then
  mkdir -p "$CARRY"
  grep -qxF "/.device/" .gitignore || { echo "repro_gpu.sh: .device/ must be git-ignored" >&2; exit 1; }
  cp ../shared/data/cifar10-jpeg.tar.gz "$CARRY/" && cp ../shared/weights/resnet20-*.th "$CARRY/resnet20.th"
  du -sh "$CARRY"; exit 0
fi
case $METHOD in cmn|ppq|spq|apq) ;; *) echo "repro_gpu.sh: unknown method '$METHOD'" >&2; exit 2 ;; esac

OUT=${OUT:-runs/repro_out}
RUN=${REPRO_RUN_DIR:-runs/repro_$METHOD}
mkdir -p "$OUT" "$RUN"
LOG="$OUT/$METHOD.log"
if [[ -n ${REPRO_DRY_RUN:-} ]]; then
  PY=${PYTHON:-python3}
  DATA=(data.spec=digits "data.limit={train: 96, val: 48, test: 48}" data.image_size=16 model.name=resnet8
        weights=null train.batch_size=32)
  case $METHOD in
    cmn) ARGS=(cascade configs/repro_gpu_cmn.yaml "${DATA[@]}" cascade.fp.train.epochs=1 cascade.lo.train.epochs=1
               cascade.hi.train.epochs=1 "cascade.search.recall=[40, 80, 40]" "cascade.search.prune=[50, 50, 10]"
               cascade.search.span=0 cascade.search.finetune.epochs=1 cascade.batch_size=64) ;;
    ppq) ARGS=(compress --method ppq configs/repro_gpu_ppq.yaml "${DATA[@]}" compress.baseline.epochs=1
               compress.ppq.prune_epochs=2 compress.ppq.qat.epochs=1) ;;
    spq) ARGS=(compress --method spq configs/repro_gpu_spq.yaml "${DATA[@]}" compress.baseline.epochs=1
               compress.spq.epochs=1) ;;
    apq) ARGS=(search python/cmn_ext/search/default.yaml "data.limit={train: 96, val: 96, test: 48}"
               "search.supernet.epochs={largest: 1, kernel: 1, depth: 1, expand: 1}" search.pairs.fp=24
               search.pairs.quant=20 search.pairs.finetune_steps=1 search.predictor.epochs=5
               search.predictor.transfer_epochs=5 "search.predictor.budgets=[6]" search.evolution.generations=2
               search.evolution.population=8 search.evolution.parents=2 search.evolution.mutations=3
               search.evolution.crossovers=3 search.finalize.finetune_epochs=0 search.finalize.latency_reps=2
               search.cost.objective=bops) ;;  # no latency table: timing is the device's job
  esac
else
  source benchmarks/device_build.sh
  PY=python3
  [[ -f $CARRY/cifar10-jpeg.tar.gz && -f $CARRY/resnet20.th ]] || {
    echo "repro_gpu.sh: carry $CARRY (bash benchmarks/repro_gpu.sh prepare, here)" >&2; exit 1; }
  device_build "$OUT/build.log" || exit 1
  export CMN_DATA_CACHE=${CMN_DATA_CACHE:-/tmp/cmn_data_cache}  # the decoded uint8 tensors, once per call
  DATA=(data.spec=imagefolder:$CARRY/cifar10-jpeg.tar.gz weights=$CARRY/resnet20.th)
  case $METHOD in
    cmn) ARGS=(cascade configs/repro_gpu_cmn.yaml "${DATA[@]}") ;;
    ppq|spq) ARGS=(compress --method "$METHOD" "configs/repro_gpu_$METHOD.yaml" "${DATA[@]}") ;;
    apq) ARGS=(search configs/apq_cifar10_cpu.yaml data.spec=imagefolder:$CARRY/cifar10-jpeg.tar.gz
               search.device=cuda data.limit=null search.results_dir=null) ;;
  esac
  # a previous call's checkpoints continue the run
  [[ -f $CARRY/run_$METHOD.tar.gz ]] && tar xzf "$CARRY/run_$METHOD.tar.gz" -C "$RUN"
fi

start=$SECONDS
echo "[repro] $METHOD: cmn ${ARGS[*]} run_dir=$RUN"
PYTHONUNBUFFERED=1 timeout "${REPRO_LIMIT:-480}" "$PY" -m cmn_ext.cli "${ARGS[@]}" "run_dir=$RUN" --no-progress \
  > "$LOG" 2>&1
rc=$?
wall=$((SECONDS - start))
echo "[repro] $METHOD rc=$rc after ${wall} s"; tail -15 "$LOG"
"$PY" -m cmn_ext.bench.repro collect "$METHOD" "$RUN" "$OUT" "$wall" ${REPRO_DRY_RUN:+--dry-run}
"$PY" -m cmn_ext.bench.repro pack "$RUN" "$OUT/run_$METHOD.tar.gz"
exit $rc
