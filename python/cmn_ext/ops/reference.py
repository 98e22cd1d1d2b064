"""Float64 reference implementations of every ``torch.ops.cmn`` op (for tests; not registered as kernels).

Integer parts are computed with ``F.conv2d`` / matmul in float64 (exact for these magnitudes); the epilogue
is computed in float32 with one rounding per operation, exactly as the kernels do.
"""

import torch
import torch.nn.functional as F

from .packing import unpack_bits, unpack_int4


def pack_bits(x: torch.Tensor, encoding: str = "pm1") -> torch.Tensor:
    a, c, h, w = x.shape
    bit = (x < 0) if encoding == "pm1" else (x >= 0.5)
    words = (c + 31) // 32
    padded = torch.zeros((a, words * 32, h, w), dtype=torch.int64)
    padded[:, :c] = bit.to(torch.int64)
    shifts = torch.arange(32, dtype=torch.int64).view(1, 1, 32, 1, 1)
    packed = (padded.view(a, words, 32, h, w) << shifts).sum(dim=2)  # [A, words, H, W]
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)
    return packed.permute(0, 2, 3, 1).to(torch.int32).contiguous()


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    length = codes.shape[-1]
    c = codes.to(torch.int64)
    if length % 2:
        c = torch.cat([c, torch.zeros((*c.shape[:-1], 1), dtype=torch.int64)], dim=-1)
    return (c[..., 0::2] | (c[..., 1::2] << 4)).to(torch.uint8)


def epilogue(acc, *, scale=None, bias=None, relu=False, output="int", out_dtype=None, out_scale=1.0,
             out_encoding=None, default_encoding="pm1"):
    """Apply the kernels' fused epilogue to int32 accumulators [N, K, *spatial]."""
    if output == "int":
        return acc.to(torch.int32)
    shape = [1, acc.shape[1]] + [1] * (acc.dim() - 2)
    y = acc.to(torch.float32)
    if scale is not None:
        y = y * scale.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    if relu:
        y = torch.clamp_min(y, 0.0)
    if output == "float":
        return y.to(out_dtype or torch.float32)
    if output == "int8":
        return torch.clamp(torch.round(y / out_scale), -128, 127).to(torch.int8)
    if output == "uint8":
        return torch.clamp(torch.round(y / out_scale), 0, 255).to(torch.uint8)
    if output == "bits":
        enc = out_encoding or default_encoding
        y4 = y if y.dim() == 4 else y.reshape(y.shape[0], y.shape[1], 1, 1)
        bits = pack_bits(y4, enc)
        return bits if y.dim() == 4 else bits.reshape(y.shape[0], -1)
    raise ValueError(f"unknown output {output!r}")


def binary_conv2d(x_bits, w_bits, in_channels, stride, padding, dilation, encoding="pm1", **epi):
    x = unpack_bits(x_bits, in_channels, encoding).to(torch.float64)
    w = unpack_bits(w_bits, in_channels, "pm1").to(torch.float64)
    acc = F.conv2d(x, w, None, stride, padding, dilation)
    return epilogue(torch.round(acc).to(torch.int64), default_encoding=encoding, **epi)


def int8_conv2d(x, w, stride, padding, dilation, keep=None, *, compact=False, **epi):
    k_full = w.shape[0] if keep is None else keep.shape[0]
    kept = torch.arange(k_full) if keep is None else torch.nonzero(keep).flatten()
    if keep is not None and w.shape[0] != k_full:  # compacted weights: one row per kept filter
        w_full = torch.zeros((k_full, *w.shape[1:]), dtype=w.dtype)
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
                **epi):
    x = x_levels.to(torch.float64)[unpack_int4(x_packed, in_channels).long()].permute(0, 3, 1, 2)
    w = w_levels.to(torch.float64)[unpack_int4(w_packed, in_channels).long()].permute(0, 3, 1, 2)
    acc = F.conv2d(x, w, None, stride, padding, dilation)
    return epilogue(torch.round(acc).to(torch.int64), **epi)
