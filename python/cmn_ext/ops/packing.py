"""Packing helpers around ``torch.ops.cmn.pack_bits`` / ``pack_int4`` and their inverses."""

import torch


def unpack_bits(bits: torch.Tensor, channels: int, encoding: str = "pm1") -> torch.Tensor:
    """Inverse of ``pack_bits``: int32 [A, H, W, ceil(C/32)] -> float32 [A, C, H, W] of +-1 ("pm1") or 0/1 ("01")."""
    if bits.dtype != torch.int32 or bits.dim() != 4:
        raise ValueError(f"unpack_bits: 'bits' expected an int32 [A, H, W, words] tensor, got {bits.dtype} {tuple(bits.shape)}")
    if encoding not in ("pm1", "01"):
        raise ValueError(f'unpack_bits: \'encoding\' expected "pm1" or "01", got "{encoding}"')
    c = torch.arange(channels, device=bits.device)
    words = bits[..., c // 32].to(torch.int64) & 0xFFFFFFFF  # [A, H, W, C]
    set_ = ((words >> (c % 32)) & 1).to(torch.bool)
    if encoding == "pm1":
        vals = torch.where(set_, -1.0, 1.0)
    else:
        vals = set_.to(torch.float32)
    return vals.permute(0, 3, 1, 2).contiguous()


def unpack_int4(packed: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of ``pack_int4``: uint8 [..., ceil(L/2)] -> uint8 codes [..., L]."""
    if packed.dtype != torch.uint8:
        raise ValueError(f"unpack_int4: 'packed' expected uint8, got {packed.dtype}")
    if packed.shape[-1] != (length + 1) // 2:
        raise ValueError(f"unpack_int4: 'packed' has {packed.shape[-1]} bytes per row, expected {(length + 1) // 2} for length={length}")
    lo = packed & 0x0F
    hi = packed >> 4
    both = torch.stack([lo, hi], dim=-1).flatten(-2)
    return both[..., :length].contiguous()


def pack_apot_conv_input(codes_nchw: torch.Tensor) -> torch.Tensor:
    """uint8 codes [N, C, H, W] -> packed NHWC [N, H, W, ceil(C/2)], the layout ``apot_conv2d`` reads."""
    return torch.ops.cmn.pack_int4(codes_nchw.permute(0, 2, 3, 1).contiguous())


def pack_apot_conv_weight(codes_kcrs: torch.Tensor) -> torch.Tensor:
    """uint8 codes [K, C, kh, kw] -> packed [K, kh, kw, ceil(C/2)], the layout ``apot_conv2d`` reads."""
    return torch.ops.cmn.pack_int4(codes_kcrs.permute(0, 2, 3, 1).contiguous())
