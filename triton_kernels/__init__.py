"""Triton kernels of cmn_ext, shipped as ``cmn_ext.triton_kernels``.

One module per kernel family, each registering ``torch.ops.cmn.<name>_triton`` with ``torch.library.triton_op``.
The families arrive with the GPU-kernels work; this package exists so the wheel layout is fixed from the start.
"""
