"""Input makers shared by the op tests."""

import torch

import cmn_ext  # noqa: F401


# (n, c, k, h, w, kh, kw, stride, padding, dilation): 1x1 and 5x5 kernels, stride 2, dilation 2,
# padding 0/1/2, channel counts around the 32-bit word boundary.
CONV_EDGE_CASES = [
    (2, 33, 5, 7, 6, 1, 1, (1, 1), (0, 0), (1, 1)),
    (2, 31, 4, 9, 9, 5, 5, (1, 1), (2, 2), (1, 1)),
    (1, 32, 3, 8, 8, 3, 3, (2, 2), (1, 1), (1, 1)),
    (1, 100, 6, 9, 7, 3, 3, (1, 1), (2, 2), (2, 2)),
    (2, 1, 2, 5, 5, 3, 3, (1, 2), (0, 1), (1, 1)),
]


def binary_inputs(n, c, k, h, w, kh, kw, encoding):
    x = torch.randn(n, c, h, w) if encoding == "pm1" else torch.rand(n, c, h, w)
    wt = torch.randn(k, c, kh, kw)
    return torch.ops.cmn.pack_bits(x, encoding), torch.ops.cmn.pack_bits(wt, "pm1")


def int8_inputs(n, c, k, h, w, kh, kw, unsigned):
    if unsigned:
        x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8)
    else:
        x = torch.randint(-128, 128, (n, c, h, w), dtype=torch.int8)
    wt = torch.randint(-128, 128, (k, c, kh, kw), dtype=torch.int8)
    return x, wt


def apot_conv_inputs(n, c, k, h, w, kh, kw):
    xc = torch.randint(0, 16, (n, c, h, w), dtype=torch.uint8)
    wc = torch.randint(0, 16, (k, c, kh, kw), dtype=torch.uint8)
    return cmn_ext.ops.pack_apot_conv_input(xc), cmn_ext.ops.pack_apot_conv_weight(wc)
