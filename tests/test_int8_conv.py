import pytest
import torch
from helpers import CONV_EDGE_CASES, int8_inputs
from hypothesis import assume, given
from hypothesis import strategies as st

from cmn_ext.ops import reference as ref

EDGE_CASES = CONV_EDGE_CASES + [
    (1, 64, 5, 6, 6, 3, 3, (1, 1), (1, 1), (1, 1)),
]


@pytest.mark.parametrize("unsigned", [False, True])
@pytest.mark.parametrize("case", EDGE_CASES)
def test_int8_conv_edge_cases_exact(unsigned, case):
    n, c, k, h, w, kh, kw, stride, padding, dilation = case
    x, wt = int8_inputs(n, c, k, h, w, kh, kw, unsigned)
    out = torch.ops.cmn.int8_conv2d(x, wt, list(stride), list(padding), list(dilation))
    assert out.dtype == torch.int32
    assert torch.equal(out, ref.int8_conv2d(x, wt, stride, padding, dilation))


def test_int8_conv_extreme_values_exact():
    # Every product at its largest magnitude: exactness must not depend on the data being small.
    x = torch.full((1, 64, 5, 5), 255, dtype=torch.uint8)
    wt = torch.full((3, 64, 3, 3), -128, dtype=torch.int8)
    out = torch.ops.cmn.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1])
    assert out[0, 0, 2, 2].item() == 255 * -128 * 64 * 9
    assert torch.equal(out, ref.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1]))


KEEP = torch.tensor([True, False, True, True, False, False, True])


@pytest.mark.parametrize("compacted_weights", [False, True])
@pytest.mark.parametrize("compact", [False, True])
def test_int8_conv_keep_mask(compacted_weights, compact):
    x, wt = int8_inputs(2, 20, 7, 6, 6, 3, 3, True)
    w_in = wt[KEEP].contiguous() if compacted_weights else wt
    out = torch.ops.cmn.int8_conv2d(x, w_in, [1, 1], [1, 1], [1, 1], KEEP, compact=compact)
    expected = ref.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1], KEEP, compact=compact)
    assert torch.equal(out, expected)
    if not compact:
        assert out.shape[1] == 7 and torch.count_nonzero(out[:, ~KEEP]) == 0
    else:
        assert out.shape[1] == int(KEEP.sum())


def test_int8_conv_pruned_filters_are_not_read():
    # The values of pruned filters must not matter: they are never computed.
    x, wt = int8_inputs(1, 8, 7, 5, 5, 3, 3, False)
    wt2 = wt.clone()
    wt2[~KEEP] = 77
    a = torch.ops.cmn.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1], KEEP)
    b = torch.ops.cmn.int8_conv2d(x, wt2, [1, 1], [1, 1], [1, 1], KEEP)
    assert torch.equal(a, b)


def test_int8_conv_all_pruned_and_none_pruned():
    x, wt = int8_inputs(1, 8, 4, 5, 5, 3, 3, True)
    none = torch.zeros(4, dtype=torch.bool)
    assert torch.count_nonzero(torch.ops.cmn.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1], none)) == 0
    assert torch.ops.cmn.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1], none, compact=True).shape == (1, 0, 5, 5)
    full = torch.ones(4, dtype=torch.bool)
    assert torch.equal(torch.ops.cmn.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1], full),
                       torch.ops.cmn.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1]))


def test_int8_conv_unstructured_zero_weights_match_dense_reference():
    # Element-wise (magnitude) pruning is honoured by zero weights: identical to the reference.
    x, wt = int8_inputs(1, 16, 6, 6, 6, 3, 3, True)
    wt[torch.rand(wt.shape) < 0.6] = 0
    assert torch.equal(torch.ops.cmn.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1]),
                       ref.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1]))


def test_int8_conv_empty_batch():
    x, wt = int8_inputs(0, 8, 4, 5, 5, 3, 3, True)
    assert torch.ops.cmn.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1]).shape == (0, 4, 5, 5)


@given(
    n=st.integers(0, 2), c=st.integers(1, 40), k=st.integers(1, 9), h=st.integers(1, 8), w=st.integers(1, 8),
    kh=st.integers(1, 4), kw=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2), d=st.integers(1, 2),
    unsigned=st.booleans(), keep_bits=st.integers(0, 511), compact=st.booleans(),
)
def test_int8_conv_property(n, c, k, h, w, kh, kw, s, p, d, unsigned, keep_bits, compact):
    assume(d * (kh - 1) + 1 <= h + 2 * p and d * (kw - 1) + 1 <= w + 2 * p)
    x, wt = int8_inputs(n, c, k, h, w, kh, kw, unsigned)
    keep = torch.tensor([(keep_bits >> i) & 1 == 1 for i in range(k)])
    args = ([s, s], [p, p], [d, d], keep)
    assert torch.equal(torch.ops.cmn.int8_conv2d(x, wt, *args, compact=compact),
                       ref.int8_conv2d(x, wt, *args, compact=compact))


@pytest.mark.parametrize("output,extra", [("float", {}), ("float", {"out_dtype": torch.float16}),
                                          ("uint8", {"out_scale": 40.0}), ("int8", {"out_scale": 25.0})])
def test_int8_conv_epilogue(output, extra):
    x, wt = int8_inputs(2, 12, 7, 5, 5, 3, 3, True)
    kw = dict(scale=torch.rand(7) * 0.01, bias=torch.randn(7), relu=True, output=output, **extra)
    out = torch.ops.cmn.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1], KEEP, **kw)
    expected = ref.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1], KEEP, **kw)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    if output == "float":  # pruned channels carry the folded-BN bias through ReLU, like the QAT model
        torch.testing.assert_close(out[:, 1].float(), kw["bias"][1].clamp_min(0).to(out.dtype).float().expand_as(out[:, 1]))
