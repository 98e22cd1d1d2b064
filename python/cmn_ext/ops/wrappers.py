"""Typed Python wrappers of the ``torch.ops.cmn`` operators: shapes and dtypes in the docstrings, ``stride`` /
``padding`` / ``dilation`` as an int or a pair. They call the registered ops (the same kernels, the same errors),
so they work under ``torch.compile`` and on every device the ops have a kernel for. The epilogue keywords are
described in docs/kernels.md ("Fused epilogue")."""

from __future__ import annotations

import torch

Pair = int | tuple[int, int] | list[int]


def _pair(v: Pair, name: str) -> list[int]:
    if isinstance(v, int):
        return [v, v]
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) for i in v):
        return list(v)
    raise TypeError(f"'{name}' expected an int or a pair of ints, got {v!r}")


def pack_bits(x: torch.Tensor, encoding: str = "pm1") -> torch.Tensor:
    """float [A, C, H, W] -> int32 [A, H, W, ceil(C/32)]: channel c -> word c // 32, bit c % 32 (least
    significant first), tail bits 0. ``"pm1"``: bit = x < 0 (1 means -1); ``"01"``: bit = x >= 0.5."""
    return torch.ops.cmn.pack_bits(x, encoding)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes 0..15 [..., L] -> uint8 [..., ceil(L/2)], element 2j in the low nibble of byte j."""
    return torch.ops.cmn.pack_int4(codes)


def binary_conv2d(x_bits: torch.Tensor, w_bits: torch.Tensor, in_channels: int, stride: Pair = 1,
                  padding: Pair = 0, dilation: Pair = 1, encoding: str = "pm1", **epilogue) -> torch.Tensor:
    """Binary convolution. ``x_bits`` int32 [N, H, W, ceil(C/32)] (``pack_bits(x, encoding)``), ``w_bits``
    int32 [K, kh, kw, ceil(C/32)] (``pack_bits(w, "pm1")``). Returns int32 [N, K, Ho, Wo] (channels_last memory)
    equal to ``F.conv2d`` of the decoded ±1 (or 0/1) tensors with zero padding, or the epilogue's output."""
    return torch.ops.cmn.binary_conv2d(x_bits, w_bits, in_channels, _pair(stride, "stride"),
                                       _pair(padding, "padding"), _pair(dilation, "dilation"), encoding, **epilogue)


def int8_conv2d(x: torch.Tensor, w: torch.Tensor, stride: Pair = 1, padding: Pair = 0, dilation: Pair = 1,
                keep: torch.Tensor | None = None, **epilogue) -> torch.Tensor:
    """Exact integer convolution: ``x`` uint8 / int8 [N, C, H, W] (channels_last memory read without a copy),
    ``w`` int8 [K, C, kh, kw] or only the kept filters, ``keep`` bool [K] (pruned filters are not computed).
    Returns int32 [N, K, Ho, Wo] (``compact=True``: only the kept channels), or the epilogue's output."""
    return torch.ops.cmn.int8_conv2d(x, w, _pair(stride, "stride"), _pair(padding, "padding"),
                                     _pair(dilation, "dilation"), keep, **epilogue)


def apot_matmul(a_packed: torch.Tensor, a_levels: torch.Tensor, b_packed: torch.Tensor, b_levels: torch.Tensor,
                k: int, method: str = "auto", **epilogue) -> torch.Tensor:
    """``out[m, n] = sum_i a_levels[a[m, i]] * b_levels[b[n, i]]`` exactly, on nibble-packed codes: ``a_packed``
    uint8 [M, ceil(k/2)], ``b_packed`` uint8 [N, ceil(k/2)] (rows like nn.Linear's weight), level tables int32
    [16]. ``method``: "int8" (decode + integer GEMM), "shift_add" (the papers' shift-add), "auto"."""
    return torch.ops.cmn.apot_matmul(a_packed, a_levels, b_packed, b_levels, k, method, **epilogue)


def apot_conv2d(x_packed: torch.Tensor, x_levels: torch.Tensor, w_packed: torch.Tensor, w_levels: torch.Tensor,
                in_channels: int, stride: Pair = 1, padding: Pair = 0, dilation: Pair = 1, method: str = "auto",
                **epilogue) -> torch.Tensor:
    """APoT convolution on nibble-packed codes: ``x_packed`` uint8 [N, H, W, ceil(C/2)] (NHWC codes),
    ``w_packed`` uint8 [K, kh, kw, ceil(C/2)], level tables int32 [16]. Returns int32 [N, K, Ho, Wo]
    (channels_last memory) or the epilogue's output (``output="int4"`` gives the next layer's codes)."""
    return torch.ops.cmn.apot_conv2d(x_packed, x_levels, w_packed, w_levels, in_channels, _pair(stride, "stride"),
                                     _pair(padding, "padding"), _pair(dilation, "dilation"), method, **epilogue)


def int8_prepack(w: torch.Tensor) -> torch.Tensor:
    """int8 weights [R, C, kh, kw] (the filters the kernel computes) -> the CPU kernels' layout (int32, 1-d),
    passed as ``prepacked=`` to ``int8_conv2d`` / ``apot_conv2d`` (decoded APoT levels)."""
    return torch.ops.cmn.int8_prepack(w)


def binary_prepack(w_bits: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Packed binary weights [K, kh, kw, ceil(C/32)] -> the CPU kernels' layout (int64, 1-d), passed as
    ``prepacked=`` to ``binary_conv2d``."""
    return torch.ops.cmn.binary_prepack(w_bits, in_channels)


__all__ = ["apot_conv2d", "apot_matmul", "binary_conv2d", "binary_prepack", "int8_conv2d", "int8_prepack",
           "pack_bits", "pack_int4"]
