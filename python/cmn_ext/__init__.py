"""cmn_ext: compressed neural networks that run fast.

Importing the package loads the compiled operator library, which registers ``torch.ops.cmn.*``
(pack_bits, binary_conv2d, int8_conv2d, pack_int4, apot_matmul, apot_conv2d), and registers their fake
(meta) kernels so that they work under ``torch.compile``; with Triton installed it also registers the Triton
implementations ``torch.ops.cmn.<op>_triton``.
"""

import importlib.util

import torch  # noqa: F401  (loads libc10 / libtorch_cpu before the extension)

from . import _C  # noqa: F401  (registers torch.ops.cmn.*)
from . import ops  # noqa: F401  (fake kernels, references, helpers)
from .ops import OP_NAMES, build_info
from .api import APoT, Binary, DoReFa, Int8, Prune, calibrate, convert, quantize_

if importlib.util.find_spec("triton") is not None:
    from . import triton_kernels  # noqa: F401  (registers torch.ops.cmn.<op>_triton)

__version__ = _C.version

__all__ = ["APoT", "Binary", "DoReFa", "Int8", "OP_NAMES", "Prune", "__version__", "build_info", "calibrate",
           "convert", "ops", "quantize_"]
