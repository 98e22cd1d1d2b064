#!/usr/bin/env bash
# Set up cmn_ext on a fresh machine: a virtualenv in .venv, torch, the build tools, then the extension built
# against that torch (`pip install --no-build-isolation -e .`, see DESIGN.md section 5).
#
#   bash scripts/setup.sh           # runtime
#   bash scripts/setup.sh --test    # runtime + test dependencies
#
# Environment: PYTHON (default python3), TORCH_SPEC (default torch==2.14.1, the CUDA build on this machine
# kind's local index, so the CUDA sources compile too), TORCHVISION_SPEC (default torchvision==0.29.1, the
# release paired with that torch; set it empty to skip: CIFAR / ImageFolder data then need it installed),
# CMN_CUDA=AUTO|ON|OFF (default AUTO).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1}
TORCHVISION_SPEC=${TORCHVISION_SPEC-torchvision==0.29.1}
EXTRAS=""
[[ "${1:-}" == "--test" ]] && EXTRAS="[test]"

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

echo "[setup] installing ${TORCH_SPEC} ${TORCHVISION_SPEC} and the build tools"
"${PIP[@]}" install "$TORCH_SPEC" $TORCHVISION_SPEC numpy "cmake>=3.26" ninja "scikit-build-core>=0.10"

echo "[setup] building cmn_ext${EXTRAS} against $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
CMAKE_ARGS="${CMAKE_ARGS:-} -DCMN_CUDA=${CMN_CUDA:-AUTO}" \
  "${PIP[@]}" install --no-build-isolation -e ".${EXTRAS}"
echo "[setup] done: $(.venv/bin/python -c 'import cmn_ext; i = cmn_ext.build_info(); print("cmn_ext", i["version"], "CUDA sources:", ("on, archs " + ",".join(i["cuda_archs"])) if i["cuda_built"] else "off")')"
