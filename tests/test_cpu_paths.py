"""Every CPU kernel path this machine can run, bit-exact against the float64 reference.

The paths are chosen at run time from the CPU's features (cmn_ext.ops.cpu_paths()); the tests force each
available one in turn: the instruction-set paths (scalar, AVX2, AVX-512, VNNI where present) and the
emulations (emu_*) that run the AVX-512 / VNNI / VPOPCNTDQ data layouts and tiling on AVX2 instructions, so
that their logic is tested on every AVX2 machine. int8 convolutions also run with the integer Winograd
F(2x2, 3x3) on and off, and with few input channels (the taps x channels reduction of a first layer).
"""

import pytest
import torch
from conftest import APOT_ACT_LEVELS, APOT_WEIGHT_LEVELS
from helpers import apot_conv_inputs, binary_inputs, int8_inputs
from hypothesis import assume, given
from hypothesis import strategies as st

import cmn_ext
from cmn_ext.ops import cpu_paths, reference as ref, set_winograd, using_cpu_path

INT8_PATHS = cpu_paths()["int8"]["available"]
BINARY_PATHS = cpu_paths()["binary"]["available"]


def test_report_which_paths_run():
    info = cpu_paths()
    print(f"\nCPU features: {info['features']}; int8 paths: {INT8_PATHS}; binary paths: {BINARY_PATHS}")
    assert "scalar" in INT8_PATHS and "scalar" in BINARY_PATHS
    assert info["int8"]["selected"] in INT8_PATHS and info["binary"]["selected"] in BINARY_PATHS
    if "avx2" in info["features"]:  # the emulations are tested wherever AVX2 is
        assert {"emu_avx512", "emu_vnni"} <= set(INT8_PATHS) and "emu_vpopcnt" in BINARY_PATHS


def test_unknown_or_unavailable_path_is_refused():
    with pytest.raises(ValueError, match="unknown int8 path"):
        cmn_ext.ops.set_cpu_path("int8", "avx9000")
    with pytest.raises(ValueError, match="'family' expected"):
        cmn_ext.ops.set_cpu_path("fp64", "scalar")
    missing = [p for p in cpu_paths()["int8"]["built"] if p not in INT8_PATHS]
    for name in missing:
        with pytest.raises(ValueError, match="needs instructions this CPU does not have"):
            cmn_ext.ops.set_cpu_path("int8", name)
    assert cpu_paths()["int8"]["selected"] in INT8_PATHS  # a refused choice changes nothing


# (n, c, k, h, w, kh, kw, stride, padding, dilation): 3x3 stride 1 (Winograd), stride 2, dilation, 1x1, 5x5,
# channel counts around every packing width (2, 4, 8, 16 lanes / 32 bits), few input channels (first layers)
SHAPES = [
    (2, 16, 16, 8, 8, 3, 3, (1, 1), (1, 1), (1, 1)),
    (2, 33, 20, 7, 6, 3, 3, (1, 1), (1, 1), (1, 1)),
    (1, 64, 72, 6, 5, 3, 3, (1, 1), (2, 2), (1, 1)),
    (3, 8, 8, 5, 9, 3, 3, (1, 1), (0, 0), (1, 1)),
    (2, 3, 16, 9, 9, 3, 3, (1, 1), (1, 1), (1, 1)),
    (1, 3, 5, 7, 7, 3, 3, (2, 2), (1, 1), (1, 1)),
    (2, 31, 24, 9, 9, 3, 3, (2, 2), (1, 1), (1, 1)),
    (1, 17, 9, 9, 7, 3, 3, (1, 1), (2, 2), (2, 2)),
    (2, 33, 5, 7, 6, 1, 1, (1, 1), (0, 0), (1, 1)),
    (2, 12, 40, 9, 9, 5, 5, (1, 1), (2, 2), (1, 1)),
    (1, 1, 3, 5, 5, 3, 3, (1, 2), (0, 1), (1, 1)),
    (2, 16, 16, 1, 1, 3, 3, (1, 1), (1, 1), (1, 1)),
]


@pytest.fixture(params=[True, False], ids=["winograd", "direct"])
def winograd(request):
    set_winograd(request.param)
    yield request.param
    set_winograd(None)


@pytest.mark.parametrize("path", INT8_PATHS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:5])))
def test_int8_conv_every_path(path, shape, winograd):
    n, c, k, h, w, kh, kw, s, p, d = shape
    for unsigned in (True, False):
        x, wt = int8_inputs(n, c, k, h, w, kh, kw, unsigned)
        keep = torch.rand(k) < 0.6
        with using_cpu_path("int8", path):
            got = torch.ops.cmn.int8_conv2d(x, wt, list(s), list(p), list(d))
            got_masked = torch.ops.cmn.int8_conv2d(x, wt[keep], list(s), list(p), list(d), keep)
            got_compact = torch.ops.cmn.int8_conv2d(x, wt[keep], list(s), list(p), list(d), keep, compact=True)
        assert torch.equal(got, ref.int8_conv2d(x, wt, list(s), list(p), list(d)))
        assert torch.equal(got_masked, ref.int8_conv2d(x, wt[keep], list(s), list(p), list(d), keep))
        assert torch.equal(got_compact, ref.int8_conv2d(x, wt[keep], list(s), list(p), list(d), keep, compact=True))


@pytest.mark.parametrize("path", INT8_PATHS)
@pytest.mark.parametrize("shape", SHAPES[:8], ids=lambda s: "x".join(map(str, s[:5])))
def test_apot_conv_every_path(path, shape, winograd):
    n, c, k, h, w, kh, kw, s, p, d = shape
    xp, wp = apot_conv_inputs(n, c, k, h, w, kh, kw)
    args = (xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, c, list(s), list(p), list(d))
    with using_cpu_path("int8", path):
        got = torch.ops.cmn.apot_conv2d(*args, "int8")
    assert torch.equal(got, ref.apot_conv2d(*args))


def test_apot_negative_activation_levels_leave_the_quads_path():
    """uint8 quads (VNNI) cannot hold negative levels: such calls take a pairs path, still exact."""
    levels = APOT_WEIGHT_LEVELS  # signed
    xp, wp = apot_conv_inputs(2, 20, 8, 6, 6, 3, 3)
    args = (xp, levels, wp, APOT_WEIGHT_LEVELS, 20, [1, 1], [1, 1], [1, 1])
    for path in INT8_PATHS:
        with using_cpu_path("int8", path):
            assert torch.equal(torch.ops.cmn.apot_conv2d(*args), ref.apot_conv2d(*args))


@pytest.mark.parametrize("path", BINARY_PATHS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:5])))
def test_binary_conv_every_path(path, shape):
    n, c, k, h, w, kh, kw, s, p, d = shape
    for enc in ("pm1", "01"):
        xb, wb = binary_inputs(n, c, k, h, w, kh, kw, enc)
        with using_cpu_path("binary", path):
            got = torch.ops.cmn.binary_conv2d(xb, wb, c, list(s), list(p), list(d), enc)
        assert torch.equal(got, ref.binary_conv2d(xb, wb, c, list(s), list(p), list(d), enc))


@pytest.mark.parametrize("path", BINARY_PATHS)
def test_binary_bits_output_every_path(path):
    """Bits without a residual are decided on the integer dot products (per-channel thresholds found by
    bisection): equal to the float epilogue for every scale sign, zero scales and NaN biases."""
    xb, wb = binary_inputs(2, 33, 70, 6, 6, 3, 3, "01")
    scale = torch.randn(70) * 0.1
    scale[::7] = 0.0
    bias = torch.randn(70)
    bias[::11] = float("nan")
    for relu in (False, True):
        for out_encoding in ("01", "pm1"):
            kw = dict(scale=scale, bias=bias, relu=relu, output="bits", out_encoding=out_encoding)
            with using_cpu_path("binary", path):
                got = torch.ops.cmn.binary_conv2d(xb, wb, 33, [1, 1], [1, 1], [1, 1], "01", **kw)
            assert torch.equal(got, ref.binary_conv2d(xb, wb, 33, [1, 1], [1, 1], [1, 1], "01", **kw))


@given(n=st.integers(0, 2), c=st.integers(1, 40), k=st.integers(1, 40), h=st.integers(1, 9), w=st.integers(1, 9),
       ks=st.sampled_from([1, 3]), stride=st.integers(1, 2), pad=st.integers(0, 2), unsigned=st.booleans(),
       path=st.sampled_from(INT8_PATHS), wino=st.booleans())
def test_int8_conv_property(n, c, k, h, w, ks, stride, pad, unsigned, path, wino):
    assume(h + 2 * pad >= ks and w + 2 * pad >= ks)
    x, wt = int8_inputs(n, c, k, h, w, ks, ks, unsigned)
    set_winograd(wino)
    try:
        with using_cpu_path("int8", path):
            got = torch.ops.cmn.int8_conv2d(x, wt, [stride, stride], [pad, pad], [1, 1])
    finally:
        set_winograd(None)
    assert torch.equal(got, ref.int8_conv2d(x, wt, [stride, stride], [pad, pad], [1, 1]))


def test_winograd_overflow_bound_falls_back_to_direct():
    """Winograd's int32 sums grow with C (|4 Y| <= 9 C 4 max|x| 9 max|w|); past the bound the direct kernel
    runs: a 240-channel uint8 x int8 conv is still exact."""
    x, wt = int8_inputs(1, 240, 8, 4, 4, 3, 3, True)
    wt[:] = -128
    x[:] = 255
    assert torch.equal(torch.ops.cmn.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1]),
                       ref.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1]))


# ---- prepacked weight layouts ------------------------------------------------------------------------------
def test_prepacked_weights_give_the_same_results():
    x, wt = int8_inputs(2, 20, 12, 7, 7, 3, 3, True)
    packed = torch.ops.cmn.int8_prepack(wt)
    assert packed.dtype == torch.int32 and packed.shape == torch.ops.cmn.int8_prepack(wt.to("meta")).shape
    assert torch.equal(torch.ops.cmn.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1], prepacked=packed),
                       torch.ops.cmn.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1]))
    xb, wb = binary_inputs(2, 40, 12, 6, 6, 3, 3, "pm1")
    bp = torch.ops.cmn.binary_prepack(wb, 40)
    assert bp.dtype == torch.int64 and bp.shape == torch.ops.cmn.binary_prepack(wb.to("meta"), 40).shape
    assert torch.equal(torch.ops.cmn.binary_conv2d(xb, wb, 40, [1, 1], [1, 1], [1, 1], prepacked=bp),
                       torch.ops.cmn.binary_conv2d(xb, wb, 40, [1, 1], [1, 1], [1, 1]))
    xp, wp = apot_conv_inputs(2, 20, 12, 6, 6, 3, 3)
    decoded = APOT_WEIGHT_LEVELS[cmn_ext.ops.unpack_int4(wp, 20).long()].permute(0, 3, 1, 2).to(torch.int8)
    args = (xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, 20, [1, 1], [1, 1], [1, 1])
    assert torch.equal(torch.ops.cmn.apot_conv2d(*args, prepacked=torch.ops.cmn.int8_prepack(decoded)),
                       ref.apot_conv2d(*args))


def test_prepacked_layout_mismatch_is_refused():
    x, wt = int8_inputs(1, 20, 12, 5, 5, 3, 3, True)
    other = torch.ops.cmn.int8_prepack(wt[:, :, :1, :1].contiguous())
    with pytest.raises(ValueError, match="'prepacked' holds 12 rows of 20 channels x 1x1"):
        torch.ops.cmn.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1], prepacked=other)
    with pytest.raises(ValueError, match="not a layout from cmn::int8_prepack"):
        torch.ops.cmn.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1], prepacked=torch.zeros(100, dtype=torch.int32))
    with pytest.raises(ValueError, match="is truncated"):
        torch.ops.cmn.int8_conv2d(x, wt, [1, 1], [1, 1], [1, 1], prepacked=torch.ops.cmn.int8_prepack(wt)[:-5])
    xb, wb = binary_inputs(1, 20, 4, 5, 5, 3, 3, "pm1")
    with pytest.raises(ValueError, match="not a layout from cmn::binary_prepack"):
        torch.ops.cmn.binary_conv2d(xb, wb, 20, [1, 1], [1, 1], [1, 1], prepacked=torch.ops.cmn.int8_prepack(wt))
    with pytest.raises(ValueError, match="argument 'w_bits' expected 2 packed words"):
        torch.ops.cmn.binary_prepack(wb, 40)
    with pytest.raises(TypeError, match="argument 'w' expected dtype Char"):
        torch.ops.cmn.int8_prepack(wt.float())
