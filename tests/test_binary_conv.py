import pytest
import torch
from helpers import CONV_EDGE_CASES, binary_inputs
from hypothesis import given
from hypothesis import strategies as st

from cmn_ext.ops import reference as ref

EDGE_CASES = CONV_EDGE_CASES + [
    (1, 64, 7, 6, 6, 3, 3, (1, 1), (1, 1), (1, 1)),
    (1, 3, 2, 3, 3, 3, 3, (1, 1), (0, 0), (1, 1)),  # kernel exactly fills the input
    (1, 16, 3, 2, 2, 3, 3, (1, 1), (1, 1), (1, 1)),  # every output pixel touches padding
]


@pytest.mark.parametrize("encoding", ["pm1", "01"])
@pytest.mark.parametrize("case", EDGE_CASES)
def test_binary_conv_edge_cases_exact(encoding, case):
    n, c, k, h, w, kh, kw, stride, padding, dilation = case
    xb, wb = binary_inputs(n, c, k, h, w, kh, kw, encoding)
    out = torch.ops.cmn.binary_conv2d(xb, wb, c, list(stride), list(padding), list(dilation), encoding)
    assert out.dtype == torch.int32
    assert torch.equal(out, ref.binary_conv2d(xb, wb, c, stride, padding, dilation, encoding))


@pytest.mark.parametrize("encoding", ["pm1", "01"])
def test_binary_conv_empty_batch(encoding):
    xb, wb = binary_inputs(0, 33, 4, 5, 5, 3, 3, encoding)
    out = torch.ops.cmn.binary_conv2d(xb, wb, 33, [1, 1], [1, 1], [1, 1], encoding)
    assert out.shape == (0, 4, 5, 5)


def test_binary_conv_ignores_garbage_tail_bits():
    xb, wb = binary_inputs(1, 5, 3, 4, 4, 3, 3, "pm1")
    clean = torch.ops.cmn.binary_conv2d(xb, wb, 5, [1, 1], [1, 1], [1, 1])
    dirty_x, dirty_w = xb | (0x7FFFFFE0), wb | (0x7FFFFFE0)  # set bits 5..30 beyond the 5 channels
    assert torch.equal(torch.ops.cmn.binary_conv2d(dirty_x, dirty_w, 5, [1, 1], [1, 1], [1, 1]), clean)


@given(
    n=st.integers(0, 2), c=st.integers(1, 70), k=st.integers(1, 9), h=st.integers(1, 9), w=st.integers(1, 9),
    kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2),
    pw=st.integers(0, 2), dh=st.integers(1, 2), dw=st.integers(1, 2), encoding=st.sampled_from(["pm1", "01"]),
)
def test_binary_conv_property(n, c, k, h, w, kh, kw, sh, sw, ph, pw, dh, dw, encoding):
    if dh * (kh - 1) + 1 > h + 2 * ph or dw * (kw - 1) + 1 > w + 2 * pw:
        return  # covered by the error tests
    xb, wb = binary_inputs(n, c, k, h, w, kh, kw, encoding)
    args = (c, [sh, sw], [ph, pw], [dh, dw], encoding)
    assert torch.equal(torch.ops.cmn.binary_conv2d(xb, wb, *args), ref.binary_conv2d(xb, wb, *args))


# ---- fused epilogue ------------------------------------------------------------------------------------------
def _epi_inputs(k=40):
    xb, wb = binary_inputs(2, 45, k, 6, 6, 3, 3, "pm1")
    scale = torch.rand(k) * 0.2 + 0.01
    scale[::3] *= -1  # a negative (folded BN) scale flips the sign comparison
    bias = torch.randn(k) * 5
    return xb, wb, scale, bias


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_binary_conv_float_epilogue(out_dtype):
    xb, wb, scale, bias = _epi_inputs()
    kw = dict(scale=scale, bias=bias, output="float", out_dtype=out_dtype)
    out = torch.ops.cmn.binary_conv2d(xb, wb, 45, [1, 1], [1, 1], [1, 1], **kw)
    expected = ref.binary_conv2d(xb, wb, 45, [1, 1], [1, 1], [1, 1], **kw)
    assert out.dtype == out_dtype
    # Same fp32 operations, one rounding each, then one cast: bit-identical for every dtype (tolerance 0).
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("out_encoding", [None, "pm1", "01"])
def test_binary_conv_bits_epilogue_feeds_next_layer(out_encoding):
    xb, wb, scale, bias = _epi_inputs()
    kw = dict(scale=scale, bias=bias, output="bits", out_encoding=out_encoding)
    out = torch.ops.cmn.binary_conv2d(xb, wb, 45, [1, 1], [1, 1], [1, 1], **kw)
    assert out.shape == (2, 6, 6, 2)
    assert torch.equal(out, ref.binary_conv2d(xb, wb, 45, [1, 1], [1, 1], [1, 1], **kw))
    # The packed output is a valid input of the next binary layer.
    w2 = torch.ops.cmn.pack_bits(torch.randn(3, 40, 3, 3))
    nxt = torch.ops.cmn.binary_conv2d(out, w2, 40, [1, 1], [1, 1], [1, 1], out_encoding or "pm1")
    assert nxt.shape == (2, 3, 6, 6)


def test_binary_conv_int8_epilogue():
    xb, wb, scale, bias = _epi_inputs()
    kw = dict(scale=scale, bias=bias, output="int8", out_scale=0.05)
    out = torch.ops.cmn.binary_conv2d(xb, wb, 45, [1, 1], [1, 1], [1, 1], **kw)
    assert out.dtype == torch.int8
    assert torch.equal(out, ref.binary_conv2d(xb, wb, 45, [1, 1], [1, 1], [1, 1], **kw))
