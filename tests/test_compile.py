"""The ops trace through torch.compile(fullgraph=True): fake kernels give the right shapes and dtypes."""

import torch
from conftest import APOT_ACT_LEVELS, APOT_WEIGHT_LEVELS

from cmn_ext.ops import reference as ref


def _binary_block(x, w1, w2, scale, bias):
    xb = torch.ops.cmn.pack_bits(x)
    h = torch.ops.cmn.binary_conv2d(xb, torch.ops.cmn.pack_bits(w1), x.shape[1], [1, 1], [1, 1], [1, 1],
                                    scale=scale, bias=bias, output="bits")
    return torch.ops.cmn.binary_conv2d(h, torch.ops.cmn.pack_bits(w2), w1.shape[0], [1, 1], [1, 1], [1, 1],
                                       output="float")


def test_compile_binary_block_fullgraph():
    x, w1, w2 = torch.randn(2, 20, 6, 6), torch.randn(36, 20, 3, 3), torch.randn(4, 36, 3, 3)
    scale, bias = torch.rand(36), torch.randn(36)
    compiled = torch.compile(_binary_block, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x, w1, w2, scale, bias), _binary_block(x, w1, w2, scale, bias))


def _int8_and_apot(x8, w8, keep, a_codes, b_codes):
    y = torch.ops.cmn.int8_conv2d(x8, w8, [1, 1], [1, 1], [1, 1], keep, scale=torch.ones(w8.shape[0]),
                                  output="uint8", out_scale=64.0)
    k = a_codes.shape[1]
    z = torch.ops.cmn.apot_matmul(torch.ops.cmn.pack_int4(a_codes), APOT_ACT_LEVELS,
                                  torch.ops.cmn.pack_int4(b_codes), APOT_WEIGHT_LEVELS, k)
    return y, z


def test_compile_int8_and_apot_fullgraph():
    x8 = torch.randint(0, 256, (2, 5, 6, 6), dtype=torch.uint8)
    w8 = torch.randint(-128, 128, (4, 5, 3, 3), dtype=torch.int8)
    keep = torch.tensor([True, False, True, True])
    a, b = torch.randint(0, 16, (3, 17), dtype=torch.uint8), torch.randint(0, 16, (6, 17), dtype=torch.uint8)
    compiled = torch.compile(_int8_and_apot, fullgraph=True, backend="aot_eager")
    y, z = compiled(x8, w8, keep, a, b)
    y_ref, z_ref = _int8_and_apot(x8, w8, keep, a, b)
    assert torch.equal(y, y_ref) and torch.equal(z, z_ref)
    assert torch.equal(z, ref.apot_matmul(ref.pack_int4(a), APOT_ACT_LEVELS, ref.pack_int4(b), APOT_WEIGHT_LEVELS, 17))


def test_compile_compact_output_has_data_dependent_channels():
    x8 = torch.randint(0, 256, (1, 5, 4, 4), dtype=torch.uint8)
    w8 = torch.randint(-128, 128, (4, 5, 3, 3), dtype=torch.int8)
    keep = torch.tensor([True, False, True, False])

    def f(x, w, keep):
        return torch.ops.cmn.int8_conv2d(x, w, [1, 1], [1, 1], [1, 1], keep, compact=True) + 1

    torch._dynamo.config.capture_dynamic_output_shape_ops = True
    try:
        out = torch.compile(f, fullgraph=True, backend="aot_eager")(x8, w8, keep)
    finally:
        torch._dynamo.config.capture_dynamic_output_shape_ops = False
    assert torch.equal(out, f(x8, w8, keep))
