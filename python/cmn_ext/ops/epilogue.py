"""The fused epilogue in PyTorch ops, shared by the float64 references and the Triton ops.

Same arithmetic as the C++/CUDA epilogue (csrc/common/epilogue.h): y = float32(acc) * scale[k] + bias[k] with
one rounding per operation, optional ReLU, then float / int8 / uint8 (round half to even, clamped) / packed
bits for the next binary layer. Works on any device.
"""

import torch

OUTPUTS = ("int", "float", "int8", "uint8", "bits")
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


def apply_epilogue(acc, *, scale=None, bias=None, relu=False, output="int", out_dtype=None, out_scale=1.0,
                   out_encoding=None, default_encoding="pm1"):
    """Apply the kernels' fused epilogue to integer accumulators [N, K, *spatial]."""
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
