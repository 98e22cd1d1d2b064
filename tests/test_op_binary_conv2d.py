"""cmn::binary_conv2d on every backend (CPU, CUDA per kernel path, Triton), bit for bit against the float64
reference (cmn_ext.ops.reference): the case table, hypothesis shapes, every epilogue, bad inputs."""

import os
import subprocess
import sys

import pytest
import torch
from helpers import CONV_CASES, ENCODINGS, Conv, binary_inputs, conv_cases, over_backends, over_cases
from hypothesis import assume, given
from hypothesis import strategies as st

from cmn_ext.ops import reference as ref

OP = "binary_conv2d"
S1 = [1, 1]
CASES = CONV_CASES + [
    Conv(1, 64, 7, 6, 6, 3, 3, padding=(1, 1)),  # two full words
    Conv(4, 256, 130, 14, 14, 3, 3, padding=(1, 1)),  # whole GPU tiles and a ragged one
    Conv(8, 96, 64, 14, 14, 3, 3, padding=(1, 1)),
]
# Hypothesis limits: the largest n, c, k, h/w, kernel side, stride, padding, dilation drawn on each kind of backend.
PROPERTY = {"cpu": dict(n=2, c=70, k=9, hw=9, ks=4, s=3, p=2, d=2),
            "gpu": dict(n=3, c=150, k=70, hw=12, ks=5, s=2, p=2, d=2),
            "interp": dict(n=2, c=40, k=9, hw=7, ks=3, s=2, p=2, d=2)}


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("backend,case", over_cases(OP, CASES))
def test_binary_conv2d_exact(backend, case, encoding):
    xb, wb = binary_inputs(*case.shape, encoding)
    out = backend(OP, xb, wb, case.c, *case.geometry, encoding)
    assert out.dtype == torch.int32
    assert torch.equal(out, ref.binary_conv2d(xb, wb, case.c, *case.geometry, encoding))


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("backend", over_backends(OP))
def test_binary_conv2d_empty_batch(backend, encoding):
    xb, wb = binary_inputs(0, 33, 4, 5, 5, 3, 3, encoding)
    assert backend(OP, xb, wb, 33, S1, S1, S1, encoding).shape == (0, 4, 5, 5)


@pytest.mark.parametrize("backend", over_backends(OP))
def test_binary_conv2d_ignores_garbage_tail_bits(backend):
    xb, wb = binary_inputs(1, 5, 3, 4, 4, 3, 3, "pm1")
    clean = backend(OP, xb, wb, 5, S1, S1, S1)
    dirty_x, dirty_w = xb | (0x7FFFFFE0), wb | (0x7FFFFFE0)  # set bits 5..30 beyond the 5 channels
    assert torch.equal(backend(OP, dirty_x, dirty_w, 5, S1, S1, S1), clean)
    assert torch.equal(clean, ref.binary_conv2d(xb, wb, 5, S1, S1, S1))


@pytest.mark.parametrize("backend", over_backends(OP))
def test_binary_conv2d_property(backend):
    @backend.examples()
    @given(conv_cases(PROPERTY[backend.kind]), st.sampled_from(ENCODINGS))
    def check(case, encoding):
        assume(case.fits)  # the others are refused: the error tests
        xb, wb = binary_inputs(*case.shape, encoding)
        args = (case.c, *case.geometry, encoding)
        assert torch.equal(backend(OP, xb, wb, *args), ref.binary_conv2d(xb, wb, *args))

    check()


# ---- fused epilogue ----------------------------------------------------------------------------------------------
def _scale(k):
    s = torch.rand(k) * 0.2 + 0.01
    s[::3] *= -1  # a negative (folded BN) scale flips the sign comparison
    return s


EPILOGUES = {  # name: (input encoding, epilogue arguments for k output channels)
    "float": ("pm1", lambda k: dict(output="float", scale=_scale(k), bias=torch.randn(k) * 5)),
    "float16": ("pm1", lambda k: dict(output="float", scale=_scale(k), bias=torch.randn(k) * 5,
                                      out_dtype=torch.float16)),
    "bfloat16": ("pm1", lambda k: dict(output="float", scale=_scale(k), bias=torch.randn(k) * 5,
                                       out_dtype=torch.bfloat16)),
    "float-relu-01": ("01", lambda k: dict(output="float", scale=_scale(k), bias=torch.randn(k) * 5, relu=True)),
    "float16-scale-01": ("01", lambda k: dict(output="float", scale=_scale(k), out_dtype=torch.float16)),
    "bfloat16-bias-01": ("01", lambda k: dict(output="float", bias=torch.randn(k) * 5, out_dtype=torch.bfloat16)),
    "bits": ("pm1", lambda k: dict(output="bits", scale=_scale(k), bias=torch.randn(k) * 5)),
    "bits-01": ("01", lambda k: dict(output="bits", scale=_scale(k), bias=torch.randn(k) * 5)),
    "bits-to-pm1": ("01", lambda k: dict(output="bits", bias=torch.randn(k) * 5, out_encoding="pm1")),
    "bits-to-01": ("pm1", lambda k: dict(output="bits", scale=_scale(k), bias=torch.randn(k) * 5, out_encoding="01")),
    "int8": ("pm1", lambda k: dict(output="int8", scale=_scale(k), bias=torch.randn(k) * 5, out_scale=0.05)),
    "int8-01": ("01", lambda k: dict(output="int8", scale=_scale(k), out_scale=0.7)),
    "uint8-relu-01": ("01", lambda k: dict(output="uint8", scale=_scale(k), bias=torch.randn(k) * 5, relu=True,
                                           out_scale=0.3)),
}
EPILOGUE_CASES = [
    Conv(2, 45, 40, 6, 6, 3, 3, padding=(1, 1)),
    Conv(2, 70, 40, 9, 9, 3, 3, padding=(1, 1)),
    Conv(2, 40, 35, 3, 3, 1, 1, tiny=True),  # two words in, two words of bits out
]


@pytest.mark.parametrize("epi", list(EPILOGUES))
@pytest.mark.parametrize("backend,case", over_cases(OP, EPILOGUE_CASES))
def test_binary_conv2d_epilogue(backend, case, epi):
    encoding, make = EPILOGUES[epi]
    xb, wb = binary_inputs(*case.shape, encoding)
    kw = make(case.k)
    out = backend(OP, xb, wb, case.c, *case.geometry, encoding, **kw)
    want = ref.binary_conv2d(xb, wb, case.c, *case.geometry, encoding, **kw)
    # Same fp32 operations, one rounding each, then one cast: bit-identical for every dtype (tolerance 0).
    assert out.dtype == want.dtype and torch.equal(out, want)
    if kw["output"] == "bits":  # packed NHWC words: a valid input of the next binary layer
        assert out.shape == (case.n, *want.shape[1:3], (case.k + 31) // 32)
        w2 = torch.ops.cmn.pack_bits(torch.randn(3, case.k, 3, 3))
        nxt_encoding = kw.get("out_encoding") or encoding
        nxt = backend(OP, out, w2, case.k, S1, S1, S1, nxt_encoding)
        assert torch.equal(nxt, ref.binary_conv2d(out, w2, case.k, S1, S1, S1, nxt_encoding))


# ---- bad inputs --------------------------------------------------------------------------------------------------
BAD = {  # name: (in_channels, padding, dilation, extra arguments, error, message after "cmn::<op>: ")
    "packed-width": (70, S1, S1, {}, ValueError, r"argument 'x_bits' expected 3 packed words per pixel for "
                                                 r"in_channels=70"),
    "encoding": (40, S1, S1, {"encoding": "xnor"}, ValueError, r"argument 'encoding' expected \"pm1\" or \"01\", "
                                                               r"got \"xnor\""),
    "epilogue-of-raw-output": (40, S1, S1, {"scale": torch.ones(3)}, ValueError,
                               r"output=\"int\" returns the raw int32 accumulators"),
    # the Triton checks word this one differently from the C++ validators
    "kernel-too-large": (40, [0, 0], [3, 3], {}, ValueError,
                         {"cpp": r"kernel larger than padded input: dilated kernel 7x7 but padded input is 5x5",
                          "triton": r"the kernel \(3x3, dilation 3x3\) does not fit the padded input"}),
}


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("backend", over_backends(OP))
def test_binary_conv2d_bad_inputs(backend, bad):
    xb, wb = binary_inputs(1, 40, 3, 5, 5, 3, 3, "pm1")
    c, padding, dilation, kw, error, msg = BAD[bad]
    with backend.raises(OP, error, msg):
        backend(OP, xb, wb, c, S1, padding, dilation, **kw)


# ---- one backend only --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", over_backends(OP, only=("cuda",)))
def test_binary_conv2d_mixed_devices_and_unknown_path_on_cuda(backend):
    xb, wb = binary_inputs(1, 40, 3, 5, 5, 3, 3, "pm1")
    with pytest.raises(ValueError, match="'x_bits' is on cuda:0 but 'w_bits' is on cpu"):
        backend.op(OP)(xb.cuda(), wb, 40, S1, S1, S1)
    with pytest.raises(ValueError, match="CMN_BINARY_CONV_PATH: expected"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CMN_BINARY_CONV_PATH", "tensor")
            backend.op(OP)(xb.cuda(), wb.cuda(), 40, S1, S1, S1)


@pytest.mark.parametrize("backend", over_backends(OP, only=("triton",)))
def test_binary_conv2d_triton_refuses_cpu_tensors_without_the_interpreter(backend):
    code = ("import cmn_ext, torch\n"
            "x = torch.zeros(1, 2, 2, 1, dtype=torch.int32)\n"
            "torch.ops.cmn.binary_conv2d_triton(x, torch.zeros(1, 1, 1, 1, dtype=torch.int32), 3, [1, 1], [0, 0], [1, 1])\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and "Triton kernels run on CUDA tensors; got CPU tensors" in r.stderr
