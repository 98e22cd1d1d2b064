"""cmn::apot_matmul and cmn::apot_conv2d on every backend (CPU, CUDA per kernel path, Triton) and every method
("shift_add", "int8", "auto"), bit for bit against the integer reference (cmn_ext.ops.reference): case tables,
the odd-k padding nibble, levels beyond int8, a nonzero level for code 0, hypothesis shapes, epilogues, bad
inputs."""

from typing import NamedTuple

import pytest
import torch
from conftest import APOT_ACT_LEVELS, APOT_WEIGHT_LEVELS
from helpers import (CONV_CASES, Conv, apot_conv_inputs, apot_matmul_inputs, conv_cases, over_backends,
                     over_cases)
from hypothesis import assume, given
from hypothesis import strategies as st

from cmn_ext.ops import reference as ref

METHODS = ["shift_add", "int8", "auto"]
S1 = [1, 1]
# Activation levels with a nonzero level for code 0: zero padding, the odd-k tail nibble and pruned rows must
# still count 0 (every level is still int8 and shift-add representable, so every method applies).
CODE0_LEVELS = APOT_ACT_LEVELS.clone()
CODE0_LEVELS[0] = 5


# ---- apot_matmul -------------------------------------------------------------------------------------------------
class MM(NamedTuple):
    m: int
    n: int
    k: int
    tiny: bool = False

    @property
    def id(self):
        return f"{self.m}x{self.n}x{self.k}"


MM_CASES = [MM(5, 9, 1, True), MM(5, 9, 2, True), MM(5, 9, 31, True), MM(5, 9, 32, True), MM(5, 9, 33, True),
            MM(5, 9, 100, True), MM(5, 9, 257), MM(5, 9, 1030), MM(1, 5, 7, True), MM(6, 9, 64, True),
            MM(17, 33, 40, True), MM(3, 64, 64), MM(16, 130, 1000), MM(200, 70, 96), MM(64, 128, 512),
            MM(0, 3, 4, True)]
MM_PROPERTY = {"cpu": dict(m=6, n=70, k=300), "gpu": dict(m=64, n=140, k=600), "interp": dict(m=6, n=16, k=64)}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backend,case", over_cases("apot_matmul", MM_CASES))
def test_apot_matmul_exact(backend, case, method):
    a, b = apot_matmul_inputs(case.m, case.n, case.k)
    out = backend("apot_matmul", a, CODE0_LEVELS, b, APOT_WEIGHT_LEVELS, case.k, method)
    assert out.dtype == torch.int32 and out.shape == (case.m, case.n)
    assert torch.equal(out, ref.apot_matmul(a, CODE0_LEVELS, b, APOT_WEIGHT_LEVELS, case.k))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backend", over_backends("apot_matmul"))
def test_apot_matmul_ignores_the_padding_nibble(backend, method):
    # k odd: the high nibble of the last byte is not an element, even when level[code] is not zero there.
    a, b = apot_matmul_inputs(3, 4, 7)
    dirty = b.clone()
    dirty[:, -1] |= 0xF0
    args = (APOT_ACT_LEVELS, dirty, APOT_WEIGHT_LEVELS, 7, method)
    assert torch.equal(backend("apot_matmul", a, *args), ref.apot_matmul(a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, 7))


@pytest.mark.parametrize("method", ["auto", "shift_add"])
@pytest.mark.parametrize("backend", over_backends("apot_matmul"))
def test_apot_matmul_large_levels_use_shift_add(backend, method):
    # Levels beyond int8 but of the form 2^p + 2^q: only shift_add is valid, and auto picks it.
    big = torch.tensor([0, 1, 2, 4, 256, 384, 1024, 3, -1, -2, -4, -256, -384, -1024, -3, 0], dtype=torch.int32)
    a, b = apot_matmul_inputs(4, 6, 50)
    assert torch.equal(backend("apot_matmul", a, APOT_ACT_LEVELS, b, big, 50, method),
                       ref.apot_matmul(a, APOT_ACT_LEVELS, b, big, 50))


@pytest.mark.parametrize("backend", over_backends("apot_matmul"))
def test_apot_matmul_empty_rows(backend):
    a, b = apot_matmul_inputs(0, 6, 10)
    assert backend("apot_matmul", a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, 10).shape == (0, 6)


@pytest.mark.parametrize("backend", over_backends("apot_matmul"))
def test_apot_matmul_property(backend):
    lim = MM_PROPERTY[backend.kind]

    @backend.examples()
    @given(st.integers(0, lim["m"]), st.integers(1, lim["n"]), st.integers(1, lim["k"]), st.sampled_from(METHODS))
    def check(m, n, k, method):
        a, b = apot_matmul_inputs(m, n, k)
        assert torch.equal(backend("apot_matmul", a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, k, method),
                           ref.apot_matmul(a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, k))

    check()


@pytest.mark.parametrize("output,extra", [("float", {}), ("bits", {}), ("int8", {"out_scale": 7.0})])
@pytest.mark.parametrize("backend", over_backends("apot_matmul"))
def test_apot_matmul_epilogue(backend, output, extra):
    a, b = apot_matmul_inputs(3, 40, 64)
    kw = dict(scale=torch.rand(40) / 480, bias=torch.randn(40), output=output, **extra)
    out = backend("apot_matmul", a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, 64, **kw)
    want = ref.apot_matmul(a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, 64, **kw)
    assert out.dtype == want.dtype and torch.equal(out, want)
    if output == "bits":
        assert out.shape == (3, 2)


# ---- apot_conv2d -------------------------------------------------------------------------------------------------
CONV = CONV_CASES + [
    Conv(2, 13, 4, 6, 5, 3, 3, padding=(1, 1)),
    Conv(1, 32, 3, 7, 7, 1, 1, stride=(2, 2), tiny=True),
    Conv(1, 33, 5, 9, 8, 5, 5, (1, 2), (2, 1)),
    Conv(2, 1, 2, 6, 6, 3, 3, padding=(2, 2), dilation=(2, 2)),
    Conv(0, 8, 3, 5, 5, 3, 3, padding=(1, 1), tiny=True),
]
CONV_PROPERTY = {"cpu": dict(n=2, c=24, k=6, hw=7, ks=3, s=2, p=2, d=1),
                 "gpu": dict(n=3, c=100, k=70, hw=12, ks=5, s=2, p=2, d=2),
                 "interp": dict(n=2, c=8, k=6, hw=5, ks=3, s=2, p=2, d=1)}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backend,case", over_cases("apot_conv2d", CONV))
def test_apot_conv2d_exact(backend, case, method):
    xp, wp = apot_conv_inputs(*case.shape)
    args = (case.c, *case.geometry)
    out = backend("apot_conv2d", xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, *args, method)
    assert out.dtype == torch.int32
    assert torch.equal(out, ref.apot_conv2d(xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, *args))
    if not backend.interpreted:  # and through the float epilogue (under the interpreter: test_apot_conv2d_epilogue)
        kw = dict(output="float", scale=torch.rand(case.k), bias=torch.randn(case.k))
        assert torch.equal(backend("apot_conv2d", xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, *args, method, **kw),
                           ref.apot_conv2d(xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, *args, **kw))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backend", over_backends("apot_conv2d"))
def test_apot_conv2d_zero_padding_ignores_level_of_code_zero(backend, method):
    # Padding contributes nothing even when levels[0] != 0.
    xp, wp = apot_conv_inputs(1, 6, 2, 4, 4, 3, 3)
    args = (6, S1, [2, 2], S1)
    assert torch.equal(backend("apot_conv2d", xp, CODE0_LEVELS, wp, APOT_WEIGHT_LEVELS, *args, method),
                       ref.apot_conv2d(xp, CODE0_LEVELS, wp, APOT_WEIGHT_LEVELS, *args))


@pytest.mark.parametrize("backend", over_backends("apot_conv2d"))
def test_apot_conv2d_property(backend):
    @backend.examples()
    @given(conv_cases(CONV_PROPERTY[backend.kind]), st.sampled_from(METHODS))
    def check(case, method):
        assume(case.fits)  # the others are refused: the error tests
        xp, wp = apot_conv_inputs(*case.shape)
        args = (case.c, *case.geometry)
        assert torch.equal(backend("apot_conv2d", xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, *args, method),
                           ref.apot_conv2d(xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, *args))

    check()


CONV_EPILOGUES = {"float": dict(output="float"), "uint8-relu": dict(output="uint8", relu=True, out_scale=0.25),
                  "int8": dict(output="int8", out_scale=3.0), "bits": dict(output="bits")}


@pytest.mark.parametrize("epi", list(CONV_EPILOGUES))
@pytest.mark.parametrize("backend", over_backends("apot_conv2d"))
def test_apot_conv2d_epilogue(backend, epi):
    xp, wp = apot_conv_inputs(2, 9, 5, 5, 5, 3, 3)
    kw = dict(scale=torch.rand(5), bias=torch.randn(5), **CONV_EPILOGUES[epi])
    args = (APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, 9, S1, S1, S1, "auto")
    out = backend("apot_conv2d", xp, *args, **kw)
    want = ref.apot_conv2d(xp, *args, **kw)
    assert out.dtype == want.dtype and torch.equal(out, want)


# ---- bad inputs --------------------------------------------------------------------------------------------------
def _bad():
    """name: (op, call arguments, error, message after "cmn::<op>: " (by backend where the wording differs))."""
    a, b = apot_matmul_inputs(2, 2, 8)
    al, wl = APOT_ACT_LEVELS, APOT_WEIGHT_LEVELS
    xp, wp = apot_conv_inputs(1, 6, 2, 4, 4, 3, 3)
    return {
        "int8-needs-int8-levels": ("apot_matmul", (a, al * 100, b, wl, 8, "int8"), ValueError,
                                   r"method=\"int8\" needs every level in \[-128, 127\]; 'a_levels' has max \|level\| "
                                   r"= 4800"),
        "shift-add-needs-two-powers": ("apot_matmul", (a, torch.where(al == 3, 7, al).int(), b, wl, 8, "shift_add"),
                                       ValueError, r"method=\"shift_add\" needs every level .* 'a_levels'\[3\] = 7 is "
                                                   r"not"),
        "auto-finds-no-path": ("apot_matmul", (a, al * 100, b, torch.where(wl == 3, 7, wl).int(), 8), ValueError,
                               r"method=\"auto\" found no valid path"),
        "method": ("apot_matmul", (a, al, b, wl, 8, "fast"), ValueError,
                   r"argument 'method' expected \"auto\", \"shift_add\" or \"int8\", got \"fast\""),
        "level-table-shape": ("apot_matmul", (a, al[:8].contiguous(), b, wl, 8), ValueError,
                              r"argument 'a_levels' expected an int32 level table of shape \[16\], got shape \[8\]"),
        "packed-width": ("apot_matmul", (a, al, b[:, :3].contiguous(), wl, 8), ValueError,
                         r"argument 'b_packed' expected 4 bytes per row for k=8, got shape \[2, 3\]"),
        "conv-packed-width": ("apot_conv2d", (xp, al, wp, wl, 7, S1, S1, S1), ValueError,
                              r"argument 'x_packed' expected 4 bytes per pixel for in_channels=7"),
        "conv-kernel-too-large": ("apot_conv2d", (xp, al, wp, wl, 6, S1, [0, 0], [3, 3]), ValueError,
                                  {"cpp": r"kernel larger than padded input: dilated kernel 7x7 but padded input is "
                                          r"4x4",
                                   "triton": r"the kernel \(3x3, dilation 3x3\) does not fit the padded input"}),
    }


BAD = ["int8-needs-int8-levels", "shift-add-needs-two-powers", "auto-finds-no-path", "method", "level-table-shape",
       "packed-width", "conv-packed-width", "conv-kernel-too-large"]


@pytest.mark.parametrize("backend,bad", over_cases(lambda bad: "apot_conv2d" if bad.startswith("conv") else
                                                   "apot_matmul", BAD, ids=BAD))
def test_apot_bad_inputs(backend, bad):
    op, args, error, msg = _bad()[bad]
    with backend.raises(op, error, msg):
        backend(op, *args)


@pytest.mark.parametrize("backend", over_backends("apot_matmul", only=("cuda",)))
def test_apot_matmul_mixed_devices_on_cuda(backend):
    a = torch.ops.cmn.pack_int4(torch.randint(0, 16, (2, 8), dtype=torch.uint8)).cuda()
    with pytest.raises(ValueError, match="'a_packed' is on cuda:0 but 'a_levels' is on cpu"):
        backend.op("apot_matmul")(a, APOT_ACT_LEVELS, a, APOT_WEIGHT_LEVELS.cuda(), 8)
