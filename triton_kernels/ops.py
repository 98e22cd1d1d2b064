"""``torch.ops.cmn.<op>_triton``: the Triton implementations, registered with ``torch.library.triton_op``.
Same positional arguments, keyword-only epilogue and results as ``torch.ops.cmn.<op>`` (DESIGN 3.0); every
schema of the Triton ops is declared here and nowhere else."""

import inspect
from typing import Optional

import torch
from torch import Tensor

from cmn_ext.ops.epilogue import apply_epilogue, check_epilogue

from . import checks
from .binary_conv import binary_conv2d_acc
from .common import INTERPRET
from .igemm import APOT, INT8, UINT8, igemm, shift_add_table

# custom ops cannot take keyword-only tensors: scale and bias come last among the positional arguments (after
# the public ones, with defaults), the rest of the epilogue is keyword-only as in the C++ schemas.
EPI = ("Tensor? scale=None, Tensor? bias=None, *, bool relu=False, str output=\"int\", ScalarType? out_dtype=None, "
       "float out_scale=1.0")


def _triton_op(name: str, schema: str):
    """torch.library.triton_op with the declared schema where this torch takes one; older releases (2.11, the GPU
    image's) infer it from the annotations, which spell the same signature (int[2] there reads SymInt[])."""
    takes_schema = "schema" in inspect.signature(torch.library.triton_op).parameters

    def register(fn):
        PYTHON_FNS[name.split("::")[1]] = fn
        if takes_schema:
            return torch.library.triton_op(name, mutates_args=(), schema=schema)(fn)
        return torch.library.triton_op(name, mutates_args=())(fn)
    return register


PYTHON_FNS = {}  # op name -> the annotated Python function it was registered from


OptT = Optional[Tensor]


def _epi(op, k, device, kw):
    if device.type == "cpu" and not INTERPRET:
        raise ValueError(f"{op}: Triton kernels run on CUDA tensors; got CPU tensors (use torch.ops.cmn.<op> on the "
                         "CPU, or set TRITON_INTERPRET=1 before importing triton to run the interpreter)")
    check_epilogue(op, k, device, **kw)
    return kw


@_triton_op("cmn::binary_conv2d_triton", (
    "(Tensor x_bits, Tensor w_bits, int in_channels, int[2] stride, int[2] padding, int[2] dilation, "
    "str encoding=\"pm1\", " + EPI + ", str? out_encoding=None) -> Tensor"))
def binary_conv2d_triton(x_bits: Tensor, w_bits: Tensor, in_channels: int, stride: list[int], padding: list[int],
                         dilation: list[int], encoding: str = "pm1", scale: OptT = None, bias: OptT = None, *,
                         relu: bool = False, output: str = "int", out_dtype: Optional[torch.dtype] = None,
                         out_scale: float = 1.0, out_encoding: Optional[str] = None) -> Tensor:
    op = "cmn::binary_conv2d_triton"
    checks.encoding(op, "encoding", encoding)
    checks.dtype(op, "x_bits", x_bits, torch.int32)
    checks.dtype(op, "w_bits", w_bits, torch.int32)
    checks.rank(op, "x_bits", x_bits, 4, "[N, H, W, ceil(C/32)] from pack_bits")
    checks.rank(op, "w_bits", w_bits, 4, "[K, kh, kw, ceil(C/32)] from pack_bits")
    checks.same_device(op, x_bits=x_bits, w_bits=w_bits)
    checks.packed_width(op, "in_channels", in_channels, 32, "packed words", x_bits=(x_bits, "pixel"),
                        w_bits=(w_bits, "tap"))
    ho, wo, geom = checks.conv_out(op, x_bits.shape[1], x_bits.shape[2], w_bits.shape[1], w_bits.shape[2], stride,
                                   padding, dilation)
    epi = _epi(op, w_bits.shape[0], x_bits.device, dict(scale=scale, bias=bias, relu=relu, output=output,
                                                         out_dtype=out_dtype, out_scale=out_scale,
                                                         out_encoding=out_encoding))
    acc = binary_conv2d_acc(x_bits, w_bits, in_channels, ho, wo, geom, encoding)
    return apply_epilogue(acc, default_encoding=encoding, **epi)


@_triton_op("cmn::int8_conv2d_triton", (
    "(Tensor x, Tensor w, int[2] stride, int[2] padding, int[2] dilation, Tensor? keep=None, " + EPI +
    ", bool compact=False) -> Tensor"))
def int8_conv2d_triton(x: Tensor, w: Tensor, stride: list[int], padding: list[int], dilation: list[int],
                       keep: OptT = None, scale: OptT = None, bias: OptT = None, *, relu: bool = False,
                       output: str = "int", out_dtype: Optional[torch.dtype] = None, out_scale: float = 1.0,
                       compact: bool = False) -> Tensor:
    op = "cmn::int8_conv2d_triton"
    checks.dtype(op, "x", x, torch.int8, torch.uint8)
    checks.dtype(op, "w", w, torch.int8)
    checks.rank(op, "x", x, 4, "[N, C, H, W]")
    checks.rank(op, "w", w, 4, "[K, C, kh, kw]")
    checks.same_device(op, x=x, w=w, keep=keep)
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"{op}: channel mismatch: 'x' has C={x.shape[1]} channels but 'w' expects {w.shape[1]} "
                         f"(x {list(x.shape)}, w {list(w.shape)})")
    k_full = w.shape[0]
    if keep is not None:
        checks.dtype(op, "keep", keep, torch.bool)
        if keep.dim() != 1:
            raise ValueError(f"{op}: argument 'keep' expected a 1-d bool mask [K], got shape {list(keep.shape)}")
        kept = torch.nonzero(keep).flatten()
        if w.shape[0] == keep.numel():
            w = w.index_select(0, kept)  # only the kept filters are computed
        elif w.shape[0] != kept.numel():
            raise ValueError(f"{op}: argument 'keep' has {keep.numel()} entries ({kept.numel()} kept) but 'w' has "
                             f"{w.shape[0]} filters; expected either all {keep.numel()} filters or the "
                             f"{kept.numel()} kept ones (compacted)")
        k_full = keep.numel()
    n, c, h, wd = x.shape
    ho, wo, geom = checks.conv_out(op, h, wd, w.shape[2], w.shape[3], stride, padding, dilation)
    checks.accumulator_range(op, c * w.shape[2] * w.shape[3], 255 if x.dtype == torch.uint8 else 128, 128)
    k_out = w.shape[0] if (compact and keep is not None) else k_full
    epi = _epi(op, k_out, x.device, dict(scale=scale, bias=bias, relu=relu, output=output, out_dtype=out_dtype,
                                         out_scale=out_scale))
    acc = igemm(x.permute(0, 2, 3, 1).contiguous(), UINT8 if x.dtype == torch.uint8 else INT8, None,
                w.permute(0, 2, 3, 1).contiguous(), INT8, None, c, ho, wo, geom)
    if keep is not None and not compact:
        full = torch.zeros((n, k_full, ho, wo), dtype=torch.int32, device=x.device)
        full[:, kept] = acc  # pruned filters: acc = 0, through the same epilogue
        acc = full
    return apply_epilogue(acc, **epi)


def _apot_tables(op, method, a_levels, a_name, b_levels, b_name, terms):
    a, b = checks.levels(op, a_name, a_levels), checks.levels(op, b_name, b_levels)
    method = checks.apot_method(op, method, a, a_name, b, b_name)
    checks.accumulator_range(op, terms, a[1], b[1])
    if method == "int8":
        return False, a_levels.contiguous(), b_levels.contiguous()
    as_table = [torch.tensor(shift_add_table(t[0]), dtype=torch.int32, device=a_levels.device) for t in (a, b)]
    return True, as_table[0], as_table[1]


@_triton_op("cmn::apot_matmul_triton", (
    "(Tensor a_packed, Tensor a_levels, Tensor b_packed, Tensor b_levels, int k, str method=\"auto\", " + EPI +
    ") -> Tensor"))
def apot_matmul_triton(a_packed: Tensor, a_levels: Tensor, b_packed: Tensor, b_levels: Tensor, k: int,
                       method: str = "auto", scale: OptT = None, bias: OptT = None, *, relu: bool = False,
                       output: str = "int", out_dtype: Optional[torch.dtype] = None, out_scale: float = 1.0) -> Tensor:
    op = "cmn::apot_matmul_triton"
    checks.dtype(op, "a_packed", a_packed, torch.uint8)
    checks.dtype(op, "b_packed", b_packed, torch.uint8)
    checks.rank(op, "a_packed", a_packed, 2, "[M, ceil(k/2)] from pack_int4")
    checks.rank(op, "b_packed", b_packed, 2, "[N, ceil(k/2)] from pack_int4")
    checks.same_device(op, a_packed=a_packed, a_levels=a_levels, b_packed=b_packed, b_levels=b_levels)
    kb = checks.packed_width(op, "k", k, 2, "bytes", a_packed=(a_packed, "row"), b_packed=(b_packed, "row"))
    shift, at, bt = _apot_tables(op, method, a_levels, "a_levels", b_levels, "b_levels", k)
    epi = _epi(op, b_packed.shape[0], a_packed.device, dict(scale=scale, bias=bias, relu=relu, output=output,
                                                             out_dtype=out_dtype, out_scale=out_scale))
    m, n = a_packed.shape[0], b_packed.shape[0]
    acc = igemm(a_packed.contiguous().view(m, 1, 1, kb), APOT, at, b_packed.contiguous().view(n, 1, 1, kb), APOT,
                bt, k, 1, 1, (1, 1, 0, 0, 1, 1), shift_add=shift)
    return apply_epilogue(acc.view(m, n), **epi)


@_triton_op("cmn::apot_conv2d_triton", (
    "(Tensor x_packed, Tensor x_levels, Tensor w_packed, Tensor w_levels, int in_channels, int[2] stride, "
    "int[2] padding, int[2] dilation, str method=\"auto\", " + EPI + ") -> Tensor"))
def apot_conv2d_triton(x_packed: Tensor, x_levels: Tensor, w_packed: Tensor, w_levels: Tensor, in_channels: int,
                       stride: list[int], padding: list[int], dilation: list[int], method: str = "auto",
                       scale: OptT = None, bias: OptT = None, *, relu: bool = False, output: str = "int",
                       out_dtype: Optional[torch.dtype] = None, out_scale: float = 1.0) -> Tensor:
    op = "cmn::apot_conv2d_triton"
    checks.dtype(op, "x_packed", x_packed, torch.uint8)
    checks.dtype(op, "w_packed", w_packed, torch.uint8)
    checks.rank(op, "x_packed", x_packed, 4, "[N, H, W, ceil(C/2)] (NHWC codes through pack_int4)")
    checks.rank(op, "w_packed", w_packed, 4, "[K, kh, kw, ceil(C/2)] (codes through pack_int4)")
    checks.same_device(op, x_packed=x_packed, x_levels=x_levels, w_packed=w_packed, w_levels=w_levels)
    checks.packed_width(op, "in_channels", in_channels, 2, "bytes", x_packed=(x_packed, "pixel"),
                        w_packed=(w_packed, "tap"))
    kh, kw = w_packed.shape[1], w_packed.shape[2]
    ho, wo, geom = checks.conv_out(op, x_packed.shape[1], x_packed.shape[2], kh, kw, stride, padding, dilation)
    shift, xt, wt = _apot_tables(op, method, x_levels, "x_levels", w_levels, "w_levels", in_channels * kh * kw)
    epi = _epi(op, w_packed.shape[0], x_packed.device, dict(scale=scale, bias=bias, relu=relu, output=output,
                                                             out_dtype=out_dtype, out_scale=out_scale))
    acc = igemm(x_packed.contiguous(), APOT, xt, w_packed.contiguous(), APOT, wt, in_channels, ho, wo, geom,
                shift_add=shift)
    return apply_epilogue(acc, **epi)


TRITON_OPS = ("binary_conv2d_triton", "int8_conv2d_triton", "apot_matmul_triton", "apot_conv2d_triton")


def _register_fakes():
    """Shapes for FakeTensor / torch.compile: the fakes of the C++ ops (scale and bias passed through)."""
    from cmn_ext.ops import fake

    pairs = ((binary_conv2d_triton, fake._binary_conv2d_fake, 7), (int8_conv2d_triton, fake._int8_conv2d_fake, 6),
             (apot_matmul_triton, fake._apot_matmul_fake, 6), (apot_conv2d_triton, fake._apot_conv2d_fake, 9))
    for op, base, n_public in pairs:
        def make(base=base, n_public=n_public):
            def _fake(*args, **kwargs):
                public, extra = args[:n_public], args[n_public:]
                kwargs.update(zip(("scale", "bias"), extra))
                return base(*public, **kwargs)
            return _fake
        op.register_fake(make())


_register_fakes()
