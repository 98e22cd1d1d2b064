"""The fused epilogue's deploy-graph features, on every conv / matmul op and every backend that has them (the
C++ kernels: CPU, CUDA), bit-exact against the PyTorch reference (cmn_ext.ops.reference): residual inputs (float or
codes, option-A stride / channel offset), float_out (the float stream next to the codes), int4 (APoT) outputs, QAT
rounding and clamp ranges, and the channels_last layout of value outputs."""

import pytest
import torch
from conftest import APOT_ACT_LEVELS, APOT_WEIGHT_LEVELS
from helpers import apot_conv_inputs, binary_inputs, int8_inputs, over_backends, over_cases

import cmn_ext
from cmn_ext.ops import cpu_paths, reference as ref, using_cpu_path

N, C, K, H = 2, 20, 24, 7
THRESHOLDS = [0.02 * i * i for i in range(1, 16)]


def _conv_cases():
    xb, wb = binary_inputs(N, C, K, H, H, 3, 3, "01")
    x8, w8 = int8_inputs(N, C, K, H, H, 3, 3, True)
    xp, wp = apot_conv_inputs(N, C, K, H, H, 3, 3)
    keep = torch.rand(K) < 0.6
    return {  # name: (op, reference, arguments)
        "binary": ("binary_conv2d", ref.binary_conv2d, (xb, wb, C, [1, 1], [1, 1], [1, 1], "01")),
        "int8": ("int8_conv2d", ref.int8_conv2d, (x8, w8, [1, 1], [1, 1], [1, 1])),
        "int8_masked": ("int8_conv2d", ref.int8_conv2d, (x8, w8[keep], [1, 1], [1, 1], [1, 1], keep)),
        "apot": ("apot_conv2d", ref.apot_conv2d,
                 (xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, C, [1, 1], [1, 1], [1, 1])),
    }


CASES = _conv_cases()
# The Triton ops apply the basic epilogue only (tested in test_op_*.py) and return NCHW-contiguous values.
NOT_ON_TRITON = {"triton": "the Triton ops have the basic epilogue only (tested in test_op_*.py); residual, float_out, "
                           "int4, out_round, out_range and channels_last outputs are the C++ kernels' (CPU, CUDA)"}


def over_conv_cases():
    """(backend, case name) params: every backend of each case's op."""
    return over_cases(lambda name: CASES[name][0], list(CASES), ids=list(CASES), unsupported=NOT_ON_TRITON)


EPILOGUES = {
    "float": dict(output="float"),
    "uint8_half_up": dict(output="uint8", out_scale=0.7, out_round="half_up"),
    "int8_range": dict(output="int8", out_scale=0.3, out_range=[-20, 90]),
    "bits01": dict(output="bits", out_encoding="01"),
    "bitspm1": dict(output="bits", out_encoding="pm1"),
    "int4": dict(output="int4", out_scale=1.5, out_thresholds=THRESHOLDS),
}


def _residuals(dtype):
    full = torch.randn(N, K, H, H) * 4
    if dtype in (torch.uint8, torch.int8):
        full = torch.randint(0 if dtype == torch.uint8 else -128, 128, full.shape).to(dtype)
    else:
        full = full.to(dtype)
    wide = torch.randn(N, 8, 2 * H, 2 * H)  # option A: stride 2, zero channels around
    return [dict(residual=full.contiguous(memory_format=torch.channels_last), residual_scale=0.25),
            dict(residual=full, residual_scale=0.25),  # NCHW memory: read through a copy
            dict(residual=wide, residual_stride=2, residual_offset=8),
            dict(residual=wide[:, :4], residual_stride=2, residual_offset=-2)]


@pytest.mark.parametrize("epi", list(EPILOGUES))
@pytest.mark.parametrize("backend,case", over_conv_cases())
def test_epilogue_outputs(backend, case, epi):
    op, reference, args = CASES[case]
    kw = dict(scale=torch.rand(K) * 0.05, bias=torch.randn(K), relu=True, **EPILOGUES[epi])
    got = backend(op, *args, **kw)
    want = reference(*args, **kw)
    assert got.dtype == want.dtype and torch.equal(got, want)
    if got.dim() == 4 and epi not in ("bits01", "bitspm1", "int4"):
        assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.uint8, torch.int8])
@pytest.mark.parametrize("backend,case", over_conv_cases())
def test_residual_and_float_out(backend, case, dtype):
    op, reference, args = CASES[case]
    for residual in _residuals(dtype) if dtype is not torch.float32 else _residuals(dtype) + _residuals(dtype)[2:]:
        for epi in ("float", "bits01", "int4", "uint8_half_up"):
            fo = torch.empty(N, K, H, H).contiguous(memory_format=torch.channels_last)
            fo_ref = torch.empty(N, K, H, H)
            kw = dict(scale=torch.rand(K) * 0.05, bias=torch.randn(K), relu=True, **EPILOGUES[epi], **residual)
            got = backend(op, *args, float_out=fo, **kw)
            want = reference(*args, float_out=fo_ref, **kw)
            assert torch.equal(got, want) and torch.equal(fo, fo_ref)


@pytest.mark.cpu
def test_epilogue_on_every_cpu_path():
    residual = dict(residual=torch.randn(N, 8, 2 * H, 2 * H), residual_stride=2, residual_offset=8)
    for path in cpu_paths()["int8"]["available"]:
        for case in ("int8", "int8_masked", "apot"):
            op, reference, args = CASES[case]
            for epi in EPILOGUES:
                kw = dict(scale=torch.rand(K) * 0.05, bias=torch.randn(K), relu=True, **EPILOGUES[epi], **residual)
                with using_cpu_path("int8", path):
                    got = getattr(torch.ops.cmn, op)(*args, **kw)
                assert torch.equal(got, reference(*args, **kw)), (path, case, epi)
    for path in cpu_paths()["binary"]["available"]:
        op, reference, args = CASES["binary"]
        for epi in EPILOGUES:
            kw = dict(scale=torch.rand(K) * 0.05, bias=torch.randn(K), **EPILOGUES[epi], **residual)
            with using_cpu_path("binary", path):
                got = torch.ops.cmn.binary_conv2d(*args, **kw)
            assert torch.equal(got, reference(*args, **kw)), (path, epi)


@pytest.mark.parametrize("backend,case", over_conv_cases())
def test_residual_with_every_epilogue(backend, case):
    """Every epilogue output with a strided, channel-offset residual and float_out (NHWC outputs on a GPU)."""
    op, reference, args = CASES[case]
    residual = torch.randn(N, 8, 2 * H, 2 * H)
    for name, epi in EPILOGUES.items():
        kw = dict(scale=torch.rand(K) * 0.05, bias=torch.randn(K), relu=True, residual=residual, residual_stride=2,
                  residual_offset=8, **epi)
        fo = torch.empty(N, K, H, H).contiguous(memory_format=torch.channels_last)
        fo_ref = torch.empty(N, K, H, H)
        got = backend(op, *args, float_out=fo, **kw)
        want = reference(*args, float_out=fo_ref, **kw)
        assert torch.equal(got, want) and torch.equal(fo, fo_ref), name


@pytest.mark.parametrize("backend", over_backends("apot_matmul", unsupported=NOT_ON_TRITON))
def test_apot_matmul_epilogue(backend):
    a = torch.ops.cmn.pack_int4(torch.randint(0, 16, (5, 37), dtype=torch.uint8))
    b = torch.ops.cmn.pack_int4(torch.randint(0, 16, (12, 37), dtype=torch.uint8))
    args = (a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, 37)
    res = torch.randn(5, 8)
    for epi in EPILOGUES.values():
        fo, fo_ref = torch.empty(5, 12), torch.empty(5, 12)
        kw = dict(scale=torch.rand(12) * 0.01, bias=torch.randn(12), relu=True, residual=res, residual_offset=3,
                  **epi)
        got = backend("apot_matmul", *args, float_out=fo, **kw)
        assert torch.equal(got, ref.apot_matmul(*args, float_out=fo_ref, **kw)) and torch.equal(fo, fo_ref)


@pytest.mark.parametrize("backend", over_backends("int8_conv2d", unsupported=NOT_ON_TRITON))
def test_epilogue_argument_errors(backend):
    name, _, args = CASES["int8"]

    def op(*args, **kw):
        return backend(name, *args, **kw)

    with pytest.raises(ValueError, match="'out_thresholds' \\(the ascending decision levels"):
        op(*args, output="int4")
    with pytest.raises(ValueError, match="expected finite ascending values, got 0.1 at index 1"):
        op(*args, output="int4", out_thresholds=[0.5, 0.1])
    with pytest.raises(ValueError, match="expected 1 to 15 values, got 16"):
        op(*args, output="int4", out_thresholds=[float(i) for i in range(16)])
    with pytest.raises(ValueError, match="'out_thresholds' applies to output=\"int4\" only"):
        op(*args, output="uint8", out_thresholds=[0.5])
    with pytest.raises(ValueError, match="'out_round' expected \"half_even\" or \"half_up\", got \"up\""):
        op(*args, output="uint8", out_round="up")
    with pytest.raises(ValueError, match="'out_round' applies to output=\"int8\" or \"uint8\" only"):
        op(*args, output="float", out_round="half_up")
    with pytest.raises(ValueError, match="'out_range' expected \\[lo, hi\\] with 0 <= lo <= hi <= 255, got \\[-1, 3\\]"):
        op(*args, output="uint8", out_range=[-1, 3])
    with pytest.raises(ValueError, match="output=\"int\" returns the raw int32 accumulators"):
        op(*args, residual=torch.randn(N, K, H, H))
    with pytest.raises(ValueError, match="'residual' expected 2 rows"):
        op(*args, output="float", residual=torch.randn(3, K, H, H))
    with pytest.raises(ValueError, match="'residual' is 7x7 but an output of 7x7 with residual_stride=2 needs"):
        op(*args, output="float", residual=torch.randn(N, K, H, H), residual_stride=2)
    with pytest.raises(TypeError, match="'residual' expected float32, float16, bfloat16, int8 or uint8"):
        op(*args, output="float", residual=torch.randn(N, K, H, H).double())
    with pytest.raises(ValueError, match="'float_out' expected channels_last"):
        op(*args, output="bits", float_out=torch.empty(N, K, H, H))
    with pytest.raises(ValueError, match="'float_out' expected shape"):
        op(*args, output="bits", float_out=torch.empty(N, K + 1, H, H).contiguous(memory_format=torch.channels_last))
    with pytest.raises(TypeError, match="'float_out' expected dtype Float"):
        op(*args, output="bits", float_out=torch.empty(N, K, H, H, dtype=torch.float16))


def test_fake_kernels_match_the_new_outputs():
    for case, (name, _, args) in CASES.items():
        op = getattr(torch.ops.cmn, name)
        for epi in EPILOGUES.values():
            real = op(*args, **epi)
            fake = op(*[a.to("meta") if isinstance(a, torch.Tensor) else a for a in args], **epi)
            assert fake.shape == real.shape and fake.dtype == real.dtype and fake.stride() == real.stride(), (case, epi)


@pytest.mark.parametrize("backend", over_backends("int8_conv2d", unsupported=NOT_ON_TRITON))
def test_opcheck_with_residual_and_float_out(backend):
    name, _, args = CASES["int8"]
    fo = torch.empty(N, K, H, H).contiguous(memory_format=torch.channels_last)
    kwargs = dict(scale=torch.rand(K), bias=torch.randn(K), output="uint8", out_scale=3.0, out_round="half_up",
                  residual=torch.randn(N, K, H, H), float_out=fo)
    on = lambda values: [backend.to(v) for v in values]  # noqa: E731
    torch.library.opcheck(backend.op(name).default, tuple(on(args)), dict(zip(kwargs, on(kwargs.values()))),
                          test_utils=("test_schema", "test_faketensor"))
    nameb, _, argsb = CASES["binary"]
    torch.library.opcheck(backend.op(nameb).default, tuple(on(argsb)),
                          dict(output="int4", out_thresholds=THRESHOLDS, scale=backend.to(torch.rand(K))),
                          test_utils=("test_schema", "test_faketensor"))
    assert cmn_ext  # the package registered the ops
