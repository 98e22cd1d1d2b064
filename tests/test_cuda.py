"""CUDA kernels against the CPU kernels, bit for bit, on many shapes; every CUDA path (tensor-core and CUDA-core
variants chosen through their environment switches); bad inputs on CUDA. Skipped without a GPU."""

import pytest
import torch
from hypothesis import assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import cmn_ext
from conftest import APOT_ACT_LEVELS, APOT_WEIGHT_LEVELS
from helpers import CONV_EDGE_CASES, apot_conv_inputs, binary_inputs, int8_inputs

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device in this process"),
    pytest.mark.skipif(not cmn_ext.build_info()["cuda_built"], reason="CUDA sources were not compiled in this build"),
]
S1 = [1, 1]
conv_shapes = st.tuples(st.integers(0, 3), st.integers(1, 150), st.integers(1, 70), st.integers(1, 12),
                        st.integers(1, 12), st.sampled_from([1, 3, 5]), st.sampled_from([1, 2]), st.integers(0, 2),
                        st.sampled_from([1, 2]))


def _both(op, *args, **kw):
    """The op on CPU and on CUDA (result moved back)."""
    want = getattr(torch.ops.cmn, op)(*args, **kw)
    move = lambda v: v.cuda() if isinstance(v, torch.Tensor) else v  # noqa: E731
    got = getattr(torch.ops.cmn, op)(*map(move, args), **{k: move(v) for k, v in kw.items()})
    assert got.is_cuda
    return got.cpu(), want


def _fits(h, w, k, p, d):
    return min(h, w) + 2 * p >= d * (k - 1) + 1


@pytest.fixture(params=["mma", "popc"])
def binary_path(request, monkeypatch):
    monkeypatch.setenv("CMN_BINARY_CONV_PATH", request.param)
    return request.param


@pytest.fixture(params=["mma", "gemv"])
def apot_path(request, monkeypatch):
    monkeypatch.setenv("CMN_APOT_PATH", request.param)
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_pack_bits_and_int4(dtype):
    x = torch.randn(3, 70, 5, 4, dtype=dtype)
    x[0, 0, 0, 0] = -0.0
    for enc in ("pm1", "01"):
        got, want = _both("pack_bits", x, enc)
        assert torch.equal(got, want)
    codes = torch.randint(0, 16, (4, 3, 9), dtype=torch.uint8)
    got, want = _both("pack_int4", codes)
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="expected values in 0..15, got 16 at flat index 5"):
        torch.ops.cmn.pack_int4(torch.tensor([0, 1, 2, 3, 4, 16], dtype=torch.uint8, device="cuda"))


@pytest.mark.parametrize("encoding", ["pm1", "01"])
@pytest.mark.parametrize("case", CONV_EDGE_CASES)
def test_binary_conv2d_edge_cases(case, encoding, binary_path):
    n, c, k, h, w, kh, kw, s, p, d = case
    xb, wb = binary_inputs(n, c, k, h, w, kh, kw, encoding)
    got, want = _both("binary_conv2d", xb, wb, c, s, p, d, encoding)
    assert torch.equal(got, want)


@hsettings(max_examples=60, deadline=None)
@given(conv_shapes, st.sampled_from(["pm1", "01"]), st.sampled_from(["mma", "popc"]))
def test_binary_conv2d_property(shape, encoding, path):
    n, c, k, h, w, ks, s, p, d = shape
    assume(_fits(h, w, ks, p, d))
    xb, wb = binary_inputs(n, c, k, h, w, ks, ks, encoding)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CMN_BINARY_CONV_PATH", path)
        got, want = _both("binary_conv2d", xb, wb, c, [s, s], [p, p], [d, d], encoding)
    assert torch.equal(got, want)


def test_binary_conv2d_large_tile_shape(binary_path):
    xb, wb = binary_inputs(4, 256, 130, 14, 14, 3, 3, "pm1")
    got, want = _both("binary_conv2d", xb, wb, 256, S1, S1, S1)
    assert torch.equal(got, want)


def test_binary_conv2d_epilogues(binary_path):
    xb, wb = binary_inputs(2, 70, 40, 9, 9, 3, 3, "01")
    scale, bias = torch.rand(40) + 0.5, torch.randn(40) * 5
    for kw in ({"output": "float", "scale": scale, "bias": bias, "relu": True},
               {"output": "float", "scale": scale, "out_dtype": torch.float16},
               {"output": "float", "bias": bias, "out_dtype": torch.bfloat16},
               {"output": "bits", "scale": scale, "bias": bias},
               {"output": "bits", "bias": bias, "out_encoding": "pm1"},
               {"output": "int8", "scale": scale, "out_scale": 0.7},
               {"output": "uint8", "scale": scale, "bias": bias, "relu": True, "out_scale": 0.3}):
        got, want = _both("binary_conv2d", xb, wb, 70, S1, S1, S1, "01", **kw)
        assert got.dtype == want.dtype and torch.equal(got, want), kw


@pytest.mark.parametrize("unsigned", [False, True])
@pytest.mark.parametrize("case", CONV_EDGE_CASES)
def test_int8_conv2d_edge_cases(case, unsigned):
    n, c, k, h, w, kh, kw, s, p, d = case
    x, wt = int8_inputs(n, c, k, h, w, kh, kw, unsigned)
    got, want = _both("int8_conv2d", x, wt, s, p, d)
    assert torch.equal(got, want)


@hsettings(max_examples=60, deadline=None)
@given(conv_shapes, st.booleans(), st.floats(0, 1), st.booleans())
def test_int8_conv2d_property(shape, unsigned, keep_frac, compact):
    n, c, k, h, w, ks, s, p, d = shape
    assume(_fits(h, w, ks, p, d))
    x, wt = int8_inputs(n, c, k, h, w, ks, ks, unsigned)
    keep = torch.rand(k) < keep_frac
    got, want = _both("int8_conv2d", x, wt, [s, s], [p, p], [d, d], keep, compact=compact)
    assert torch.equal(got, want)


def test_int8_conv2d_masked_epilogue_and_compacted_weights():
    x, wt = int8_inputs(3, 64, 96, 10, 10, 3, 3, True)
    keep = torch.rand(96) < 0.5
    for w, compact in ((wt, False), (wt[keep].contiguous(), False), (wt[keep].contiguous(), True)):
        k_out = int(keep.sum()) if compact else 96
        kw = {"output": "float", "scale": torch.rand(k_out), "bias": torch.randn(k_out), "relu": True,
              "out_dtype": torch.float16, "compact": compact}
        got, want = _both("int8_conv2d", x, w, S1, S1, S1, keep, **kw)
        assert torch.equal(got, want)
    got, want = _both("int8_conv2d", x, wt, S1, S1, S1, torch.zeros(96, dtype=torch.bool), output="int8", bias=torch.randn(96))
    assert torch.equal(got, want)  # every filter pruned: the bias alone


@pytest.mark.parametrize("method", ["int8", "shift_add"])
@pytest.mark.parametrize("m,n,k", [(1, 5, 7), (3, 64, 64), (16, 130, 1000), (17, 33, 40), (200, 70, 96), (0, 3, 4)])
def test_apot_matmul(m, n, k, method, apot_path):
    a = torch.ops.cmn.pack_int4(torch.randint(0, 16, (m, k), dtype=torch.uint8))
    b = torch.ops.cmn.pack_int4(torch.randint(0, 16, (n, k), dtype=torch.uint8))
    levels0 = APOT_ACT_LEVELS.clone()
    levels0[0] = 5  # code 0 with a nonzero level: the odd-k tail and padding must still count 0
    got, want = _both("apot_matmul", a, levels0, b, APOT_WEIGHT_LEVELS, k, method)
    assert torch.equal(got, want)


@pytest.mark.parametrize("method", ["int8", "shift_add"])
@pytest.mark.parametrize("case", CONV_EDGE_CASES)
def test_apot_conv2d(case, method):
    n, c, k, h, w, kh, kw, s, p, d = case
    xp, wp = apot_conv_inputs(n, c, k, h, w, kh, kw)
    got, want = _both("apot_conv2d", xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, c, s, p, d, method,
                      output="float", scale=torch.rand(k), bias=torch.randn(k))
    assert torch.equal(got, want)


def test_bad_inputs_on_cuda():
    x, wt = int8_inputs(1, 4, 3, 5, 5, 3, 3, False)
    with pytest.raises(ValueError, match="all tensors must be on one device; 'x' is on cpu but 'w' is on cuda"):
        torch.ops.cmn.int8_conv2d(x, wt.cuda(), S1, S1, S1)
    with pytest.raises(ValueError, match="'x' is on cuda:0 but 'keep' is on cpu"):
        torch.ops.cmn.int8_conv2d(x.cuda(), wt.cuda(), S1, S1, S1, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="argument 'bias' is on cpu but the inputs are on cuda"):
        torch.ops.cmn.int8_conv2d(x.cuda(), wt.cuda(), S1, S1, S1, output="float", bias=torch.zeros(3))
    a = torch.ops.cmn.pack_int4(torch.randint(0, 16, (2, 8), dtype=torch.uint8)).cuda()
    with pytest.raises(ValueError, match="'a_packed' is on cuda:0 but 'a_levels' is on cpu"):
        torch.ops.cmn.apot_matmul(a, APOT_ACT_LEVELS, a, APOT_WEIGHT_LEVELS.cuda(), 8)
    xb, wb = binary_inputs(1, 40, 3, 5, 5, 3, 3, "pm1")
    with pytest.raises(ValueError, match="'x_bits' is on cuda:0 but 'w_bits' is on cpu"):
        torch.ops.cmn.binary_conv2d(xb.cuda(), wb, 40, S1, S1, S1)
    with pytest.raises(ValueError, match="CMN_BINARY_CONV_PATH: expected"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CMN_BINARY_CONV_PATH", "tensor")
            torch.ops.cmn.binary_conv2d(xb.cuda(), wb.cuda(), 40, S1, S1, S1)


def test_triton_ops_on_cuda_match():
    pytest.importorskip("triton")
    xb, wb = binary_inputs(8, 96, 64, 14, 14, 3, 3, "pm1")
    assert torch.equal(torch.ops.cmn.binary_conv2d_triton(xb.cuda(), wb.cuda(), 96, S1, S1, S1).cpu(),
                       torch.ops.cmn.binary_conv2d(xb, wb, 96, S1, S1, S1))
    x, wt = int8_inputs(8, 64, 64, 14, 14, 3, 3, True)
    assert torch.equal(torch.ops.cmn.int8_conv2d_triton(x.cuda(), wt.cuda(), S1, S1, S1).cpu(),
                       torch.ops.cmn.int8_conv2d(x, wt, S1, S1, S1))
    a = torch.ops.cmn.pack_int4(torch.randint(0, 16, (64, 512), dtype=torch.uint8))
    b = torch.ops.cmn.pack_int4(torch.randint(0, 16, (128, 512), dtype=torch.uint8))
    for method in ("int8", "shift_add"):
        assert torch.equal(torch.ops.cmn.apot_matmul_triton(a.cuda(), APOT_ACT_LEVELS.cuda(), b.cuda(),
                                                            APOT_WEIGHT_LEVELS.cuda(), 512, method).cpu(),
                           torch.ops.cmn.apot_matmul(a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, 512, method))
