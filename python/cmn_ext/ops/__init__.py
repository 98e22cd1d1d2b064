"""Python side of the ``torch.ops.cmn`` operators: fake kernels, float64 references and packing helpers."""

import torch

from . import fake  # noqa: F401  (registers the fake kernels; must be imported by this exact module path)
from . import reference  # noqa: F401
from .packing import (
    pack_apot_conv_input,
    pack_apot_conv_weight,
    unpack_bits,
    unpack_int4,
)

OP_NAMES = ("pack_bits", "binary_conv2d", "int8_conv2d", "pack_int4", "apot_matmul", "apot_conv2d")


def build_info() -> dict:
    """How the extension was built and which backends each op has in this process."""
    from .. import _C

    backends = {}
    for name in OP_NAMES:
        qualname = f"cmn::{name}"
        backends[name] = [key for key in ("CPU", "CUDA") if torch._C._dispatch_has_kernel_for_dispatch_key(qualname, key)]
    return {
        "version": _C.version,
        "torch": torch.__version__,
        "built_with_torch": _C.built_with_torch,
        "cuda_built": bool(_C.cuda_built),
        "cuda_available": torch.cuda.is_available(),
        "compiler": _C.cxx,
        "ops": backends,
    }


__all__ = [
    "OP_NAMES",
    "build_info",
    "pack_apot_conv_input",
    "pack_apot_conv_weight",
    "unpack_bits",
    "unpack_int4",
]
