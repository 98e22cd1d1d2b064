import pytest
import torch
from conftest import APOT_ACT_LEVELS, APOT_WEIGHT_LEVELS
from helpers import apot_conv_inputs
from hypothesis import assume, given
from hypothesis import strategies as st

from cmn_ext.ops import reference as ref

METHODS = ["shift_add", "int8", "auto"]


def _mm_inputs(m, n, k):
    a = torch.ops.cmn.pack_int4(torch.randint(0, 16, (m, k), dtype=torch.uint8))
    b = torch.ops.cmn.pack_int4(torch.randint(0, 16, (n, k), dtype=torch.uint8))
    return a, b


@pytest.mark.parametrize("k", [1, 2, 31, 32, 33, 100, 257, 1030])
def test_apot_matmul_methods_agree_with_reference(k):
    a, b = _mm_inputs(5, 9, k)
    expected = ref.apot_matmul(a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, k)
    for method in METHODS:
        out = torch.ops.cmn.apot_matmul(a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, k, method)
        assert out.dtype == torch.int32 and out.shape == (5, 9)
        assert torch.equal(out, expected), method


def test_apot_matmul_ignores_the_padding_nibble():
    # k odd: the high nibble of the last byte is not an element, even when level[code] is not zero there.
    a, b = _mm_inputs(3, 4, 7)
    dirty = b.clone()
    dirty[:, -1] |= 0xF0
    for method in METHODS:
        assert torch.equal(torch.ops.cmn.apot_matmul(a, APOT_ACT_LEVELS, dirty, APOT_WEIGHT_LEVELS, 7, method),
                           torch.ops.cmn.apot_matmul(a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, 7, method))


def test_apot_matmul_large_levels_use_shift_add():
    # Levels beyond int8 but of the form 2^p + 2^q: only shift_add is valid, and auto picks it.
    big = torch.tensor([0, 1, 2, 4, 256, 384, 1024, 3, -1, -2, -4, -256, -384, -1024, -3, 0], dtype=torch.int32)
    a, b = _mm_inputs(4, 6, 50)
    expected = ref.apot_matmul(a, APOT_ACT_LEVELS, b, big, 50)
    assert torch.equal(torch.ops.cmn.apot_matmul(a, APOT_ACT_LEVELS, b, big, 50, "auto"), expected)
    assert torch.equal(torch.ops.cmn.apot_matmul(a, APOT_ACT_LEVELS, b, big, 50, "shift_add"), expected)


def test_apot_matmul_empty_rows():
    a, b = _mm_inputs(0, 6, 10)
    assert torch.ops.cmn.apot_matmul(a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, 10).shape == (0, 6)


@given(m=st.integers(0, 6), n=st.integers(1, 70), k=st.integers(1, 300), method=st.sampled_from(METHODS))
def test_apot_matmul_property(m, n, k, method):
    a, b = _mm_inputs(m, n, k)
    assert torch.equal(torch.ops.cmn.apot_matmul(a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, k, method),
                       ref.apot_matmul(a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, k))


@pytest.mark.parametrize("output,extra", [("float", {}), ("bits", {}), ("int8", {"out_scale": 7.0})])
def test_apot_matmul_epilogue(output, extra):
    a, b = _mm_inputs(3, 40, 64)
    kw = dict(scale=torch.rand(40) / 480, bias=torch.randn(40), output=output, **extra)
    out = torch.ops.cmn.apot_matmul(a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, 64, **kw)
    expected = ref.apot_matmul(a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, 64, **kw)
    assert torch.equal(out, expected)
    if output == "bits":
        assert out.shape == (3, 2)


CONV_CASES = [
    (2, 13, 4, 6, 5, 3, 3, (1, 1), (1, 1), (1, 1)),
    (1, 32, 3, 7, 7, 1, 1, (2, 2), (0, 0), (1, 1)),
    (1, 33, 5, 9, 8, 5, 5, (1, 2), (2, 1), (1, 1)),
    (2, 1, 2, 6, 6, 3, 3, (1, 1), (2, 2), (2, 2)),
    (0, 8, 3, 5, 5, 3, 3, (1, 1), (1, 1), (1, 1)),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_apot_conv_methods_agree_with_reference(case):
    n, c, k, h, w, kh, kw, stride, padding, dilation = case
    xp, wp = apot_conv_inputs(n, c, k, h, w, kh, kw)
    args = (c, list(stride), list(padding), list(dilation))
    expected = ref.apot_conv2d(xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, *args)
    for method in METHODS:
        out = torch.ops.cmn.apot_conv2d(xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, *args, method)
        assert torch.equal(out, expected), method


def test_apot_conv_zero_padding_ignores_level_of_code_zero():
    # Padding contributes nothing even when levels[0] != 0.
    shifted = APOT_ACT_LEVELS.clone()
    shifted[0] = 5
    xp, wp = apot_conv_inputs(1, 6, 2, 4, 4, 3, 3)
    for method in ("int8", "shift_add"):
        out = torch.ops.cmn.apot_conv2d(xp, shifted, wp, APOT_WEIGHT_LEVELS, 6, [1, 1], [2, 2], [1, 1], method)
        assert torch.equal(out, ref.apot_conv2d(xp, shifted, wp, APOT_WEIGHT_LEVELS, 6, [1, 1], [2, 2], [1, 1]))


@given(n=st.integers(0, 2), c=st.integers(1, 24), k=st.integers(1, 6), h=st.integers(2, 7), kh=st.integers(1, 3),
       s=st.integers(1, 2), p=st.integers(0, 2), method=st.sampled_from(METHODS))
def test_apot_conv_property(n, c, k, h, kh, s, p, method):
    assume(kh <= h + 2 * p)
    xp, wp = apot_conv_inputs(n, c, k, h, h, kh, kh)
    args = (c, [s, s], [p, p], [1, 1])
    assert torch.equal(torch.ops.cmn.apot_conv2d(xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, *args, method),
                       ref.apot_conv2d(xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, *args))
