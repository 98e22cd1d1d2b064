"""Float64 reference implementations of every ``torch.ops.cmn`` op (for tests; not registered as kernels).

Integer parts are computed with ``F.conv2d`` / matmul in float64 (exact for these magnitudes); the epilogue
is computed in float32 with one rounding per operation, exactly as the kernels do.
"""

import torch
import torch.nn.functional as F

from .epilogue import apply_epilogue as epilogue
from .epilogue import pack_bits  # noqa: F401  (the reference of cmn::pack_bits)
from .packing import unpack_bits, unpack_int4


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    length = codes.shape[-1]
    c = codes.to(torch.int64)
    if length % 2:
        c = torch.cat([c, torch.zeros((*c.shape[:-1], 1), dtype=torch.int64, device=c.device)], dim=-1)
    return (c[..., 0::2] | (c[..., 1::2] << 4)).to(torch.uint8)


def binary_conv2d(x_bits, w_bits, in_channels, stride, padding, dilation, encoding="pm1", prepacked=None, **epi):
    x = unpack_bits(x_bits, in_channels, encoding).to(torch.float64)
    w = unpack_bits(w_bits, in_channels, "pm1").to(torch.float64)
    acc = F.conv2d(x, w, None, stride, padding, dilation)
    return epilogue(torch.round(acc).to(torch.int64), default_encoding=encoding, **epi)


def int8_conv2d(x, w, stride, padding, dilation, keep=None, *, compact=False, prepacked=None, **epi):
    k_full = w.shape[0] if keep is None else keep.shape[0]
    kept = torch.arange(k_full, device=w.device) if keep is None else torch.nonzero(keep).flatten()
    if keep is not None and w.shape[0] != k_full:  # compacted weights: one row per kept filter
        w_full = torch.zeros((k_full, *w.shape[1:]), dtype=w.dtype, device=w.device)
        w_full[kept] = w
        w = w_full
    acc = F.conv2d(x.to(torch.float64), w.to(torch.float64), None, stride, padding, dilation)
    acc = torch.round(acc).to(torch.int64)
    if keep is not None:
        acc[:, ~keep] = 0
    if compact:
        acc = acc[:, kept]
    return epilogue(acc, **epi)


def apot_matmul(a_packed, a_levels, b_packed, b_levels, k, method="auto", **epi):
    a = a_levels.to(torch.float64)[unpack_int4(a_packed, k).long()]
    b = b_levels.to(torch.float64)[unpack_int4(b_packed, k).long()]
    acc = torch.round(a @ b.T).to(torch.int64)
    return epilogue(acc, **epi)


def apot_conv2d(x_packed, x_levels, w_packed, w_levels, in_channels, stride, padding, dilation, method="auto",
                prepacked=None, **epi):
    x = x_levels.to(torch.float64)[unpack_int4(x_packed, in_channels).long()].permute(0, 3, 1, 2)
    w = w_levels.to(torch.float64)[unpack_int4(w_packed, in_channels).long()].permute(0, 3, 1, 2)
    acc = F.conv2d(x, w, None, stride, padding, dilation)
    return epilogue(torch.round(acc).to(torch.int64), **epi)
