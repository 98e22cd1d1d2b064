"""Python side of the ``torch.ops.cmn`` operators: fake kernels, float64 references and packing helpers."""

import contextlib

import torch

from . import fake  # noqa: F401  (registers the fake kernels; must be imported by this exact module path)
from . import reference  # noqa: F401
from .wrappers import (
    apot_conv2d,
    apot_matmul,
    binary_conv2d,
    binary_prepack,
    int8_conv2d,
    int8_prepack,
    pack_bits,
    pack_int4,
)
from .packing import (
    pack_apot_conv_input,
    pack_apot_conv_weight,
    unpack_bits,
    unpack_int4,
)

def _registered_ops() -> tuple:
    """The cmn:: operators, read from the registry (csrc/registration.cpp declares them, nowhere else)."""
    return tuple(sorted({s.name.split("::", 1)[1] for s in torch._C._jit_get_all_schemas()
                         if s.name.startswith("cmn::") and not s.name.endswith("_triton")}))


OP_NAMES = _registered_ops()


def cpu_paths() -> dict:
    """The CPU's features and, per kernel family ("int8", "binary"), the paths this build has ("built"), those
    this CPU can run ("available"), the one the next call takes ("selected") and the ops that take it ("ops").
    ``emu_*`` paths run another instruction set's data layout and tiling on AVX2 instructions (for tests)."""
    from .. import _C

    return _C.cpu_paths()


def set_cpu_path(family: str, name: str | None = None) -> None:
    """Make every following call of ``family`` ("int8" or "binary") take CPU path ``name``; None restores the
    default (the fastest this CPU has). The environment variables CMN_CPU_INT8_PATH / CMN_CPU_BINARY_PATH set
    it at start-up."""
    from .. import _C

    _C.set_cpu_path(family, name or None)


def set_winograd(enabled: bool | None) -> None:
    """Integer Winograd F(2x2, 3x3) for 3x3 stride-1 int8 / APoT convolutions on the CPU's int16 paths (exact,
    2.25x fewer multiplies): True / False force it on / off, None restores the default (on, unless the
    environment variable CMN_CPU_WINOGRAD=0)."""
    from .. import _C

    _C.set_winograd(-1 if enabled is None else int(bool(enabled)))


@contextlib.contextmanager
def using_cpu_path(family: str, name: str | None):
    """``with using_cpu_path("int8", "emu_vnni"): ...`` runs the block on that path, then restores the previous
    choice."""
    before = cpu_paths()[family]["selected"]
    set_cpu_path(family, name)
    try:
        yield
    finally:
        set_cpu_path(family, before)


def build_info() -> dict:
    """How the extension was built and which backends each op has in this process."""
    from .. import _C

    backends = {}
    for name in OP_NAMES:
        qualname = f"cmn::{name}"
        backends[name] = [key for key in ("CPU", "CUDA") if torch._C._dispatch_has_kernel_for_dispatch_key(qualname, key)]
    built = _C.build_info()  # version, built_with_torch, compiler, cuda_built, cuda_archs, cuda_compiler
    return {
        "version": built["version"],
        "torch": torch.__version__,
        "built_with_torch": built["built_with_torch"],
        "cuda_built": built["cuda_built"],
        "cuda_archs": built["cuda_archs"],  # CMAKE_CUDA_ARCHITECTURES of the CUDA sources, e.g. ["90a"]
        "cuda_compiler": built["cuda_compiler"],
        "cuda_available": torch.cuda.is_available(),
        "compiler": built["compiler"],
        "ops": backends,
        "cpu": _C.cpu_paths(),
    }


__all__ = [
    "OP_NAMES",
    "apot_conv2d",
    "apot_matmul",
    "binary_conv2d",
    "binary_prepack",
    "int8_conv2d",
    "int8_prepack",
    "pack_bits",
    "pack_int4",
    "build_info",
    "cpu_paths",
    "set_cpu_path",
    "set_winograd",
    "using_cpu_path",
    "pack_apot_conv_input",
    "pack_apot_conv_weight",
    "unpack_bits",
    "unpack_int4",
]
