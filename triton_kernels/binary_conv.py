"""Binary convolution in Triton: bit-packed NHWC words, XOR-popcount ("pm1") or AND-popcount ("01") over the
in-frame taps only (exact zero padding), int32 result; the epilogue is applied by the caller."""

import torch
import triton
import triton.language as tl

from .common import INTERPRET, output_rows, popc, store_nchw


@triton.jit
def _binary_conv_kernel(x_ptr, w_ptr, out_ptr, M, K, C, CW, H, W, Ho, Wo, SH, SW, PH, PW, DH, DW,
                        KH: tl.constexpr, KW: tl.constexpr, PM1: tl.constexpr, USE_ASM: tl.constexpr,
                        BM: tl.constexpr, BN: tl.constexpr):
    rm, m_ok, nb, ho, wo = output_rows(tl.program_id(0), M, Ho, Wo, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    n_ok = rn < K
    cnt = tl.zeros((BM, BN), dtype=tl.int32)  # pm1: popc(x XOR w) over valid taps; 01: popc(x AND w+)
    x_pop = tl.zeros((BM,), dtype=tl.int32)   # 01: popc(x) over valid taps
    n_valid = tl.zeros((BM,), dtype=tl.int32)  # in-frame taps per output pixel
    for kh in range(KH):
        hi = ho * SH - PH + kh * DH
        for kw in range(KW):
            wi = wo * SW - PW + kw * DW
            valid = m_ok & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
            n_valid += valid.to(tl.int32)
            x_row = ((nb * H + hi) * W + wi) * CW
            w_row = (rn * (KH * KW) + kh * KW + kw) * CW
            for c in range(CW):
                xw = tl.load(x_ptr + x_row + c, mask=valid, other=0).to(tl.uint32, bitcast=True)
                ww = tl.load(w_ptr + w_row + c, mask=n_ok, other=0).to(tl.uint32, bitcast=True)
                if PM1:
                    # tail bits are 0 in both words, so they never differ
                    cnt += tl.where(valid[:, None], popc(xw[:, None] ^ ww[None, :], USE_ASM), 0)
                else:
                    # w bit 0 means +1; x is 0 off-frame and in the tail, so ~w needs no mask
                    cnt += popc(xw[:, None] & (ww ^ 0xFFFFFFFF)[None, :], USE_ASM)
                    x_pop += popc(xw, USE_ASM)
    if PM1:
        acc = n_valid[:, None] * C - 2 * cnt  # n - 2 popc(XOR) over the valid taps
    else:
        acc = 2 * cnt - x_pop[:, None]        # sum x*w = popc(x AND w+) - popc(x AND w-)
    store_nchw(out_ptr, acc, rn, n_ok, nb, ho, wo, m_ok, K, Ho, Wo)


def binary_conv2d_acc(x_bits, w_bits, in_channels, ho, wo, geom, encoding):
    """int32 [N, K, Ho, Wo] accumulators; inputs already validated."""
    n, h, w, cw = x_bits.shape
    k, kh, kw, _ = w_bits.shape
    out = torch.empty((n, k, ho, wo), dtype=torch.int32, device=x_bits.device)
    m = n * ho * wo
    if out.numel() == 0:
        return out.zero_()
    bm, bn = (32, 32) if INTERPRET else (64, 64)
    grid = (triton.cdiv(m, bm), triton.cdiv(k, bn))
    torch.library.wrap_triton(_binary_conv_kernel)[grid](x_bits.contiguous(), w_bits.contiguous(), out, m, k, in_channels, cw, h, w, ho, wo,
                              *geom, KH=kh, KW=kw, PM1=encoding == "pm1", USE_ASM=not INTERPRET, BM=bm, BN=bn)
    return out
