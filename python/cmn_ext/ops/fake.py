"""Fake (meta) kernels: output shapes, dtypes and memory formats without computing, for torch.compile,
torch.export and FakeTensor.

This module path is named by ``m.set_python_module`` in csrc/registration.cpp: keep the registrations here.
Value outputs of the convolutions are channels_last (NHWC memory), like the kernels'.
"""

import torch

_OUT_DTYPES = {"int": torch.int32, "int8": torch.int8, "uint8": torch.uint8, "bits": torch.int32}
_EPILOGUE_KEYS = ("scale", "bias", "relu", "out_scale", "out_round", "out_range", "out_thresholds", "residual",
                  "residual_scale", "residual_stride", "residual_offset", "float_out")


def _same_device(op: str, **tensors) -> None:
    """The C++ kernels' device check, for calls that reach the fake kernels with mixed devices (a meta tensor
    beside CPU ones dispatches here): refuse them rather than return uninitialised memory."""
    named = [(n, t) for n, t in tensors.items() if isinstance(t, torch.Tensor)]
    for name, t in named[1:]:
        torch._check(t.device == named[0][1].device, lambda: f"{op}: all tensors must be on one device; "
                     f"'{named[0][0]}' is on {named[0][1].device} but '{name}' is on {t.device}")


def _conv_out(size: int, pad: int, dil: int, k: int, stride: int) -> int:
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def _tensors(epilogue: dict) -> dict:
    return {k: v for k, v in epilogue.items() if isinstance(v, torch.Tensor)}


def _epilogue_empty(like, n, k, spatial, output, out_dtype):
    if output == "bits":
        return like.new_empty((n, *spatial, (k + 31) // 32), dtype=torch.int32)
    if output == "int4":
        return like.new_empty((n, *spatial, (k + 1) // 2), dtype=torch.uint8)
    if output == "float":
        dtype = out_dtype if out_dtype is not None else torch.float32
    elif output in _OUT_DTYPES:
        dtype = _OUT_DTYPES[output]
    else:
        raise ValueError(f'output: expected one of "int", "float", "int8", "uint8", "bits", "int4", got "{output}"')
    out = like.new_empty((n, k, *spatial), dtype=dtype)
    return out.contiguous(memory_format=torch.channels_last) if len(spatial) == 2 else out


@torch.library.register_fake("cmn::pack_bits")
def _pack_bits_fake(x, encoding="pm1"):
    torch._check(x.dim() == 4, lambda: f"cmn::pack_bits: argument 'x' expected a 4-d tensor, got {x.dim()}-d")
    a, c, h, w = x.shape
    return x.new_empty((a, h, w, (c + 31) // 32), dtype=torch.int32)


@torch.library.register_fake("cmn::pack_int4")
def _pack_int4_fake(codes):
    torch._check(codes.dim() >= 1, lambda: "cmn::pack_int4: argument 'codes' expected at least 1 dimension")
    return codes.new_empty((*codes.shape[:-1], (codes.shape[-1] + 1) // 2), dtype=torch.uint8)


@torch.library.register_fake("cmn::binary_conv2d")
def _binary_conv2d_fake(x_bits, w_bits, in_channels, stride, padding, dilation, encoding="pm1", *, output="int",
                        out_dtype=None, out_encoding=None, prepacked=None, **epilogue):
    _same_device("cmn::binary_conv2d", x_bits=x_bits, w_bits=w_bits, **_tensors(epilogue))
    n, h, w, _ = x_bits.shape
    k, kh, kw, _ = w_bits.shape
    ho = _conv_out(h, padding[0], dilation[0], kh, stride[0])
    wo = _conv_out(w, padding[1], dilation[1], kw, stride[1])
    return _epilogue_empty(x_bits, n, k, (ho, wo), output, out_dtype)


@torch.library.register_fake("cmn::int8_conv2d")
def _int8_conv2d_fake(x, w, stride, padding, dilation, keep=None, *, output="int", out_dtype=None, compact=False,
                      prepacked=None, **epilogue):
    _same_device("cmn::int8_conv2d", x=x, w=w, keep=keep, **_tensors(epilogue))
    n, _, h, wd = x.shape
    k_rows, _, kh, kw = w.shape
    if keep is None:
        k = k_rows
    elif not compact:
        k = keep.shape[0]
    elif k_rows != keep.shape[0]:
        k = k_rows  # weights already compacted to the kept filters
    else:
        k = torch.library.get_ctx().new_dynamic_size()  # number of True entries of keep
    ho = _conv_out(h, padding[0], dilation[0], kh, stride[0])
    wo = _conv_out(wd, padding[1], dilation[1], kw, stride[1])
    return _epilogue_empty(x, n, k, (ho, wo), output, out_dtype)


@torch.library.register_fake("cmn::apot_matmul")
def _apot_matmul_fake(a_packed, a_levels, b_packed, b_levels, k, method="auto", *, output="int", out_dtype=None,
                      **epilogue):
    _same_device("cmn::apot_matmul", a_packed=a_packed, b_packed=b_packed, **_tensors(epilogue))
    return _epilogue_empty(a_packed, a_packed.shape[0], b_packed.shape[0], (), output, out_dtype)


@torch.library.register_fake("cmn::apot_conv2d")
def _apot_conv2d_fake(x_packed, x_levels, w_packed, w_levels, in_channels, stride, padding, dilation,
                      method="auto", *, output="int", out_dtype=None, prepacked=None, **epilogue):
    _same_device("cmn::apot_conv2d", x_packed=x_packed, w_packed=w_packed, **_tensors(epilogue))
    n, h, w, _ = x_packed.shape
    k, kh, kw, _ = w_packed.shape
    ho = _conv_out(h, padding[0], dilation[0], kh, stride[0])
    wo = _conv_out(w, padding[1], dilation[1], kw, stride[1])
    return _epilogue_empty(x_packed, n, k, (ho, wo), output, out_dtype)


def _round_up(a: int, b: int) -> int:
    return (a + b - 1) // b * b


@torch.library.register_fake("cmn::int8_prepack")
def _int8_prepack_fake(w):
    r, c, kh, kw = w.shape
    taps, rpad = kh * kw, _round_up(max(r, 1), 8)
    total = 16 + taps * ((c + 1) // 2) * rpad + taps * ((c + 3) // 4) * rpad + rpad
    if kh == 3 and kw == 3:  # the Winograd F(2x2, 3x3) section
        total += 16 * ((c + 1) // 2) * rpad
    total += (taps * c + 1) // 2 * rpad  # taps x channels as one reduction
    return w.new_empty((total,), dtype=torch.int32)


@torch.library.register_fake("cmn::binary_prepack")
def _binary_prepack_fake(w_bits, in_channels):
    k, kh, kw, _ = w_bits.shape
    taps, kpad = kh * kw, _round_up(max(k, 1), 8)
    nw = max(1, (taps * in_channels + 63) // 64)
    total = 16 + 2 * nw * kpad + (k * taps + 1) // 2 + (k + 1) // 2
    return w_bits.new_empty((total,), dtype=torch.int64)
