"""Triton kernels of cmn_ext, shipped as ``cmn_ext.triton_kernels``.

Importing this package registers ``torch.ops.cmn.<op>_triton`` for binary_conv2d, int8_conv2d, apot_matmul and
apot_conv2d (``ops.py``): same arguments and bit-identical results as the C++/CUDA ops. Kernels: one
implicit GEMM over bit-packed words with popcounts (``binary_conv.py``) and one integer implicit GEMM for int8
values and decoded 4-bit APoT codes, on tensor cores through ``tl.dot`` or with literal shift-adds
(``igemm.py``). Without a GPU they run under ``TRITON_INTERPRET=1`` (set before triton is imported).
"""

from .ops import TRITON_OPS

__all__ = ["TRITON_OPS"]
