"""Bad input gets a clear error naming the argument, what was expected and what was given; never a crash."""

import pytest
import torch
from conftest import APOT_ACT_LEVELS, APOT_WEIGHT_LEVELS
from helpers import apot_conv_inputs, binary_inputs, int8_inputs

ops = torch.ops.cmn
S, P, D = [1, 1], [1, 1], [1, 1]


def test_pack_bits_errors():
    with pytest.raises(TypeError, match=r"pack_bits: argument 'x' expected a floating-point dtype, got Int"):
        ops.pack_bits(torch.zeros(1, 2, 3, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"argument 'x' expected a 4-d tensor .* got shape \[2, 3\]"):
        ops.pack_bits(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"argument 'encoding' expected \"pm1\" or \"01\", got \"bin\""):
        ops.pack_bits(torch.zeros(1, 2, 3, 3), "bin")


def test_pack_int4_errors():
    with pytest.raises(TypeError, match=r"argument 'codes' expected dtype Byte, got Int"):
        ops.pack_int4(torch.zeros(4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"argument 'codes' expected values in 0..15, got 16 at flat index 2"):
        ops.pack_int4(torch.tensor([1, 2, 16], dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"at least 1 dimension"):
        ops.pack_int4(torch.tensor(3, dtype=torch.uint8))


def test_binary_conv_errors():
    xb, wb = binary_inputs(1, 40, 3, 5, 5, 3, 3, "pm1")
    with pytest.raises(TypeError, match=r"argument 'x_bits' expected dtype Int, got Float"):
        ops.binary_conv2d(xb.float(), wb, 40, S, P, D)
    with pytest.raises(ValueError, match=r"argument 'w_bits' expected a 4-d tensor .* got shape \[3, 18\]"):
        ops.binary_conv2d(xb, wb.view(3, -1), 40, S, P, D)
    with pytest.raises(ValueError, match=r"argument 'x_bits' expected 1 packed words per pixel for in_channels=20"):
        ops.binary_conv2d(xb, wb, 20, S, P, D)
    with pytest.raises(ValueError, match=r"argument 'in_channels' expected a positive integer, got 0"):
        ops.binary_conv2d(xb, wb, 0, S, P, D)
    xb1, _ = binary_inputs(1, 20, 3, 5, 5, 3, 3, "pm1")
    with pytest.raises(ValueError, match=r"argument 'w_bits' expected 1 packed words per tap for in_channels=20"):
        ops.binary_conv2d(xb1, wb, 20, S, P, D)  # mismatched packed widths
    with pytest.raises(ValueError, match=r"argument 'stride' expected values >= 1, got \[0, 1\]"):
        ops.binary_conv2d(xb, wb, 40, [0, 1], P, D)
    with pytest.raises(ValueError, match=r"argument 'padding' expected values >= 0, got \[-1, 1\]"):
        ops.binary_conv2d(xb, wb, 40, S, [-1, 1], D)
    with pytest.raises(ValueError, match=r"kernel larger than padded input: dilated kernel 7x7 but padded input is 5x5"):
        ops.binary_conv2d(xb, wb, 40, S, [0, 0], [3, 3])
    with pytest.raises(ValueError, match=r"argument 'encoding' expected \"pm1\" or \"01\", got \"xnor\""):
        ops.binary_conv2d(xb, wb, 40, S, P, D, "xnor")
    with pytest.raises(ValueError, match=r"argument 'output' expected one of .* got \"half\""):
        ops.binary_conv2d(xb, wb, 40, S, P, D, output="half")
    with pytest.raises(ValueError, match=r"argument 'scale' expected shape \[3\] \(one value per output channel\), got \[4\]"):
        ops.binary_conv2d(xb, wb, 40, S, P, D, scale=torch.ones(4), output="float")
    with pytest.raises(ValueError, match=r"output=\"int\" returns the raw int32 accumulators"):
        ops.binary_conv2d(xb, wb, 40, S, P, D, scale=torch.ones(3))
    with pytest.raises(ValueError, match=r"argument 'out_dtype' applies to output=\"float\" only"):
        ops.binary_conv2d(xb, wb, 40, S, P, D, out_dtype=torch.float16)
    with pytest.raises(ValueError, match=r"argument 'out_scale' expected a finite positive number, got -1"):
        ops.binary_conv2d(xb, wb, 40, S, P, D, output="int8", out_scale=-1.0)
    with pytest.raises(ValueError, match=r"argument 'out_dtype' expected float32, float16 or bfloat16, got Double"):
        ops.binary_conv2d(xb, wb, 40, S, P, D, output="float", out_dtype=torch.float64)


def test_int8_conv_errors():
    x, w = int8_inputs(1, 8, 4, 5, 5, 3, 3, True)
    with pytest.raises(TypeError, match=r"argument 'x' expected dtype Char or Byte, got Float"):
        ops.int8_conv2d(x.float(), w, S, P, D)
    with pytest.raises(TypeError, match=r"argument 'w' expected dtype Char, got Byte"):
        ops.int8_conv2d(x, w.to(torch.uint8), S, P, D)
    with pytest.raises(ValueError, match=r"channel mismatch: 'x' has C=8 channels but 'w' expects 6"):
        ops.int8_conv2d(x, w[:, :6].contiguous(), S, P, D)
    with pytest.raises(ValueError, match=r"'keep' has 5 entries \(2 kept\) but 'w' has 4 filters"):
        ops.int8_conv2d(x, w, S, P, D, torch.tensor([1, 1, 0, 0, 0], dtype=torch.bool))
    with pytest.raises(TypeError, match=r"argument 'keep' expected dtype Bool, got Long"):
        ops.int8_conv2d(x, w, S, P, D, torch.ones(4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"argument 'dilation' expected a list of two ints, got 3 values"):
        ops.int8_conv2d(x, w, S, P, [1, 1, 1])
    big_x = torch.zeros(1, 20000, 3, 3, dtype=torch.uint8)
    big_w = torch.zeros(1, 20000, 3, 3, dtype=torch.int8)
    with pytest.raises(ValueError, match=r"int32 accumulator could overflow"):
        ops.int8_conv2d(big_x, big_w, S, P, D)


def test_apot_errors():
    a = ops.pack_int4(torch.randint(0, 16, (2, 9), dtype=torch.uint8))
    b = ops.pack_int4(torch.randint(0, 16, (3, 9), dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"argument 'method' expected \"auto\", \"shift_add\" or \"int8\", got \"fast\""):
        ops.apot_matmul(a, APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, 9, "fast")
    bad = APOT_WEIGHT_LEVELS.clone()
    bad[3] = 7  # 0b111: three powers of two
    with pytest.raises(ValueError, match=r"method=\"shift_add\" needs every level .* 'b_levels'\[3\] = 7 is not"):
        ops.apot_matmul(a, APOT_ACT_LEVELS, b, bad, 9, "shift_add")
    assert ops.apot_matmul(a, APOT_ACT_LEVELS, b, bad, 9, "int8").shape == (2, 3)  # int8 path still valid
    big = APOT_WEIGHT_LEVELS.clone()
    big[7] = 200
    with pytest.raises(ValueError, match=r"method=\"int8\" needs every level in \[-128, 127\]; 'b_levels' has max \|level\| = 200"):
        ops.apot_matmul(a, APOT_ACT_LEVELS, b, big, 9, "int8")
    neither = big.clone()
    neither[3] = 7
    with pytest.raises(ValueError, match=r"method=\"auto\" found no valid path"):
        ops.apot_matmul(a, APOT_ACT_LEVELS, b, neither, 9)
    with pytest.raises(ValueError, match=r"argument 'a_levels' expected an int32 level table of shape \[16\], got shape \[8\]"):
        ops.apot_matmul(a, APOT_ACT_LEVELS[:8].contiguous(), b, APOT_WEIGHT_LEVELS, 9)
    with pytest.raises(TypeError, match=r"argument 'a_levels' expected dtype Int, got Long"):
        ops.apot_matmul(a, APOT_ACT_LEVELS.long(), b, APOT_WEIGHT_LEVELS, 9)
    with pytest.raises(ValueError, match=r"argument 'b_packed' expected 5 bytes per row for k=9, got shape \[3, 4\]"):
        ops.apot_matmul(a, APOT_ACT_LEVELS, b[:, :4].contiguous(), APOT_WEIGHT_LEVELS, 9)
    with pytest.raises(TypeError, match=r"argument 'a_packed' expected dtype Byte, got Char"):
        ops.apot_matmul(a.to(torch.int8), APOT_ACT_LEVELS, b, APOT_WEIGHT_LEVELS, 9)
    xp, wp = apot_conv_inputs(1, 6, 2, 4, 4, 3, 3)
    with pytest.raises(ValueError, match=r"argument 'x_packed' expected 4 bytes per pixel for in_channels=7"):
        ops.apot_conv2d(xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, 7, S, P, D)
    with pytest.raises(ValueError, match=r"kernel larger than padded input"):
        ops.apot_conv2d(xp, APOT_ACT_LEVELS, wp, APOT_WEIGHT_LEVELS, 6, S, [0, 0], [3, 3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed-device checks need a CUDA device")
def test_mixed_devices():
    x, w = int8_inputs(1, 8, 4, 5, 5, 3, 3, True)
    with pytest.raises(ValueError, match=r"all tensors must be on one device; 'x' is on cpu but 'w' is on cuda"):
        ops.int8_conv2d(x, w.cuda(), S, P, D)


def test_requires_grad_is_refused():
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"cmn::pack_bits: argument 'x' requires grad, but cmn ops are exact "
                                           r"integer inference kernels with no gradient"):
        ops.pack_bits(x)
    xb, wb = binary_inputs(1, 8, 2, 4, 4, 3, 3, "pm1")
    scale = torch.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"argument 'scale' requires grad"):
        ops.binary_conv2d(xb, wb, 8, S, P, D, scale=scale, output="float")
    with torch.no_grad():
        assert ops.pack_bits(x).shape == (1, 4, 4, 1)
    assert ops.pack_bits(x.detach()).shape == (1, 4, 4, 1)


def test_meta_tensor_beside_cpu_tensors_is_refused():
    """A meta tensor dispatches the call to the fake kernel: it checks devices like the real kernels instead of
    returning uninitialised memory."""
    x, w = int8_inputs(1, 8, 4, 5, 5, 3, 3, True)
    with pytest.raises(RuntimeError, match=r"all tensors must be on one device; 'x' is on cpu but 'w' is on meta"):
        ops.int8_conv2d(x, w.to("meta"), S, P, D)
    xb, wb = binary_inputs(1, 8, 2, 4, 4, 3, 3, "pm1")
    with pytest.raises(RuntimeError, match=r"'x_bits' is on cpu but 'scale' is on meta"):
        ops.binary_conv2d(xb, wb, 8, S, P, D, scale=torch.ones(2, device="meta"), output="float")
    fake = ops.int8_conv2d(x.to("meta"), w.to("meta"), S, P, D)  # all on meta: shapes only
    assert fake.device.type == "meta" and fake.shape == (1, 4, 5, 5)


def test_binary_accumulator_overflow_is_refused():
    words = 2**23  # 2^28 channels: 9 taps x 2^28 > 2^31 (expanded views: no memory behind them)
    xb = torch.zeros(1, 1, 1, 1, dtype=torch.int32).expand(1, 4, 4, words)
    wb = torch.zeros(1, 1, 1, 1, dtype=torch.int32).expand(1, 3, 3, words)
    with pytest.raises(ValueError, match="the int32 accumulator could overflow"):
        ops.binary_conv2d(xb, wb, 32 * words, S, P, D)
