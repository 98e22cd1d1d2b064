"""The fused epilogue in PyTorch ops, shared by the float64 references and the Triton ops.

Same arithmetic as the C++/CUDA epilogue (csrc/common/epilogue.h): y = float32(acc) * scale[k] + bias[k] with
one rounding per operation, optional ReLU, then float / int8 / uint8 (round half to even, clamped) / packed
bits for the next binary layer. Works on any device.
"""

import torch

OUTPUTS = ("int", "float", "int8", "uint8", "bits", "int4")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def pack_bits(x: torch.Tensor, encoding: str = "pm1") -> torch.Tensor:
    """float [A, C, H, W] -> int32 [A, H, W, ceil(C/32)] (DESIGN 3.0 bit order), in PyTorch ops."""
    a, c, h, w = x.shape
    bit = (x < 0) if encoding == "pm1" else (x >= 0.5)
    words = (c + 31) // 32
    padded = torch.zeros((a, words * 32, h, w), dtype=torch.int64, device=x.device)
    padded[:, :c] = bit.to(torch.int64)
    shifts = torch.arange(32, dtype=torch.int64, device=x.device).view(1, 1, 32, 1, 1)
    packed = (padded.view(a, words, 32, h, w) << shifts).sum(dim=2)  # [A, words, H, W]
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)
    return packed.permute(0, 2, 3, 1).to(torch.int32).contiguous()


def check_epilogue(op: str, k: int, device, *, scale=None, bias=None, relu=False, output="int", out_dtype=None,
                   out_scale=1.0, out_encoding=None) -> None:
    """The keyword checks of Epilogue::make, with the same messages."""
    if output not in OUTPUTS:
        raise ValueError(f"{op}: argument 'output' expected one of {', '.join(map(repr, OUTPUTS))}, got {output!r}")
    if output == "int" and (scale is not None or bias is not None or relu):
        raise ValueError(f"{op}: output=\"int\" returns the raw int32 accumulators; 'scale', 'bias' and 'relu' need "
                         "output=\"float\", \"int8\", \"uint8\" or \"bits\"")
    if out_dtype is not None:
        if output != "float":
            raise ValueError(f"{op}: argument 'out_dtype' applies to output=\"float\" only, got output={output!r}")
        if out_dtype not in FLOAT_DTYPES:
            raise ValueError(f"{op}: argument 'out_dtype' expected float32, float16 or bfloat16, got {out_dtype}")
    if out_encoding is not None:
        if output != "bits":
            raise ValueError(f"{op}: argument 'out_encoding' applies to output=\"bits\" only, got output={output!r}")
        if out_encoding not in ("pm1", "01"):
            raise ValueError(f"{op}: argument 'out_encoding' expected \"pm1\" or \"01\", got {out_encoding!r}")
    if output in ("int8", "uint8") and not (out_scale > 0 and out_scale != float("inf")):
        raise ValueError(f"{op}: argument 'out_scale' expected a finite positive number, got {out_scale}")
    for name, t in (("scale", scale), ("bias", bias)):
        if t is None:
            continue
        if t.dtype != torch.float32:
            raise TypeError(f"{op}: argument '{name}' expected dtype float32, got {t.dtype}")
        if t.dim() != 1 or t.shape[0] != k:
            raise ValueError(f"{op}: argument '{name}' expected shape [{k}] (one value per output channel), got "
                             f"{list(t.shape)}")
        if t.device != torch.device(device):
            raise ValueError(f"{op}: argument '{name}' is on {t.device} but the inputs are on {device}")


def _residual_term(residual, shape, *, residual_scale=1.0, residual_stride=1, residual_offset=0):
    """The residual added to y (float32, the shape of the accumulators [N, K, *spatial]): channel k takes the
    residual's channel k - offset (0 outside it), pixel (oy, ox) its pixel (oy * stride, ox * stride); integer
    codes are dequantized as float32(code) * residual_scale."""
    r = residual
    if r.dtype in (torch.int8, torch.uint8):
        r = r.to(torch.float32) * torch.tensor(residual_scale, dtype=torch.float32)
    else:
        r = r.to(torch.float32)
    if r.dim() == 4:
        s = residual_stride
        r = r[:, :, ::s, ::s][:, :, : shape[2], : shape[3]]
    out = torch.zeros(shape, dtype=torch.float32, device=r.device)
    k0, k1 = max(0, residual_offset), min(shape[1], residual_offset + r.shape[1])
    if k1 > k0:
        out[:, k0:k1] = r[:, k0 - residual_offset: k1 - residual_offset]
    return out


def pack_int4_channels(codes: torch.Tensor) -> torch.Tensor:
    """int codes [N, K, *spatial] -> uint8 [N, *spatial, ceil(K/2)], channel 2j in the low nibble."""
    c = codes.to(torch.int64).movedim(1, -1)
    if c.shape[-1] % 2:
        c = torch.cat([c, torch.zeros_like(c[..., :1])], dim=-1)
    return (c[..., 0::2] | (c[..., 1::2] << 4)).to(torch.uint8).contiguous()


def apply_epilogue(acc, *, scale=None, bias=None, relu=False, output="int", out_dtype=None, out_scale=1.0,
                   out_encoding=None, default_encoding="pm1", out_round="half_even", out_range=None,
                   out_thresholds=None, residual=None, residual_scale=1.0, residual_stride=1, residual_offset=0,
                   float_out=None):
    """Apply the kernels' fused epilogue to integer accumulators [N, K, *spatial] (csrc/common/epilogue.h)."""
    if output == "int":
        return acc.to(torch.int32)
    shape = [1, acc.shape[1]] + [1] * (acc.dim() - 2)
    y = acc.to(torch.float32)
    if scale is not None:
        y = y * scale.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    if residual is not None:
        y = y + _residual_term(residual, tuple(y.shape), residual_scale=residual_scale,
                               residual_stride=residual_stride, residual_offset=residual_offset)
    if relu:
        y = torch.clamp_min(y, 0.0)
    if float_out is not None:
        float_out.copy_(y)
    if output == "float":
        return y.to(out_dtype or torch.float32)
    if output in ("int8", "uint8"):
        lo, hi = (-128, 127) if output == "int8" else (0, 255)
        if out_range is not None:
            lo, hi = out_range
        q = y / out_scale
        q = torch.floor(q + 0.5) if out_round == "half_up" else torch.round(q)
        return torch.clamp(q, lo, hi).to(torch.int8 if output == "int8" else torch.uint8)
    if output == "bits":
        enc = out_encoding or default_encoding
        y4 = y if y.dim() == 4 else y.reshape(y.shape[0], y.shape[1], 1, 1)
        bits = pack_bits(y4, enc)
        return bits if y.dim() == 4 else bits.reshape(y.shape[0], -1)
    if output == "int4":
        u = y / out_scale
        t = torch.tensor(list(out_thresholds), dtype=torch.float32, device=y.device)
        codes = (t.view(-1, *([1] * y.dim())) <= u.unsqueeze(0)).sum(0)
        return pack_int4_channels(codes)
    raise ValueError(f"unknown output {output!r}")
