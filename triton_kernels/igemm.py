"""Integer implicit GEMM in Triton, shared by ``int8_conv2d`` and the APoT ops (a matmul is a 1x1 conv on a
1x1 image). Activations NHWC, weights [K, kh, kw, C]; the reduction runs over (tap, channel) with exact zero
padding. Operands are int8 / uint8 values or packed 4-bit APoT codes decoded in registers through their level
table (so packed weights are what is read from memory):

  int8 path       decoded levels (or int8 values) on the int8 tensor cores via ``tl.dot`` (uint8 activations
                  are split as 2 * (x >> 1) + (x & 1): two exact int8 products)
  shift_add path  the papers' arithmetic: each level is sign * (2^p + 2^q), a product is at most four shifted
                  ones added up, on CUDA cores (the reference of the arithmetic, not the fast path)
"""

import torch
import triton
import triton.language as tl

from .common import INTERPRET, output_rows, store_nchw

INT8, UINT8, APOT = 0, 1, 2  # operand kinds


@triton.jit
def _load_operand(ptr, row, row_ok, rc, C, KIND: tl.constexpr, table_ptr, ROW_MAJOR: tl.constexpr):
    """A [rows, BK] (ROW_MAJOR) or [BK, rows] tile of channels ``rc`` at row bases ``row``: values for INT8 /
    UINT8, ``table[code]`` for APOT (a level, or a shift-add descriptor); 0 outside the frame and past C."""
    if ROW_MAJOR:
        mask = row_ok[:, None] & (rc < C)[None, :]
        if KIND == 2:
            byte = tl.load(ptr + row[:, None] + (rc // 2)[None, :], mask=mask, other=0).to(tl.int32)
            code = (byte >> ((rc % 2) * 4)[None, :]) & 15
        else:
            v = tl.load(ptr + row[:, None] + rc[None, :], mask=mask, other=0)
    else:
        mask = (rc < C)[:, None] & row_ok[None, :]
        if KIND == 2:
            byte = tl.load(ptr + row[None, :] + (rc // 2)[:, None], mask=mask, other=0).to(tl.int32)
            code = (byte >> ((rc % 2) * 4)[:, None]) & 15
        else:
            v = tl.load(ptr + row[None, :] + rc[:, None], mask=mask, other=0)
    if KIND == 2:
        v = tl.where(mask, tl.load(table_ptr + code), 0)  # code 0 may be a nonzero level: padding is 0
    return v


@triton.jit
def _shift_add(da, db):
    """sum_k a_k * b_k for shift-add descriptors da [BM, BK], db [BK, BN] (p | q<<5 | has_p<<10 | has_q<<11 |
    negative<<12): (2^pa + 2^qa)(2^pb + 2^qb) expanded into four shifts."""
    a = da[:, :, None]
    b = db[None, :, :]
    pa, qa, hpa, hqa = a & 31, (a >> 5) & 31, (a >> 10) & 1, (a >> 11) & 1
    pb, qb, hpb, hqb = b & 31, (b >> 5) & 31, (b >> 10) & 1, (b >> 11) & 1
    mag = ((hpa & hpb) << (pa + pb)) + ((hpa & hqb) << (pa + qb)) + ((hqa & hpb) << (qa + pb)) + \
        ((hqa & hqb) << (qa + qb))
    neg = ((a >> 12) ^ (b >> 12)) & 1
    return tl.sum(tl.where(neg == 1, -mag, mag), axis=1)


@triton.jit
def _igemm_kernel(x_ptr, w_ptr, x_table, w_table, out_ptr, M, K, C, XS, WS, H, W, Ho, Wo, SH, SW, PH, PW, DH, DW,
                  KH: tl.constexpr, KW: tl.constexpr, X_KIND: tl.constexpr, W_KIND: tl.constexpr,
                  SHIFT_ADD: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm, m_ok, nb, ho, wo = output_rows(tl.program_id(0), M, Ho, Wo, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    n_ok = rn < K
    acc = tl.zeros((BM, BN), dtype=tl.int32)
    for kh in range(KH):
        hi = ho * SH - PH + kh * DH
        for kw in range(KW):
            wi = wo * SW - PW + kw * DW
            valid = m_ok & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
            x_row = ((nb * H + hi) * W + wi) * XS
            w_row = (rn * (KH * KW) + kh * KW + kw) * WS
            for c0 in range(0, C, BK):
                rc = c0 + tl.arange(0, BK)
                a = _load_operand(x_ptr, x_row, valid, rc, C, X_KIND, x_table, True)
                b = _load_operand(w_ptr, w_row, n_ok, rc, C, W_KIND, w_table, False)
                if SHIFT_ADD:
                    acc += _shift_add(a, b)
                elif X_KIND == 1:
                    hi8 = (a >> 1).to(tl.int8)
                    lo8 = (a & 1).to(tl.int8)
                    b8 = b.to(tl.int8)
                    acc += 2 * tl.dot(hi8, b8, out_dtype=tl.int32) + tl.dot(lo8, b8, out_dtype=tl.int32)
                else:
                    acc += tl.dot(a.to(tl.int8), b.to(tl.int8), out_dtype=tl.int32)
    store_nchw(out_ptr, acc, rn, n_ok, nb, ho, wo, m_ok, K, Ho, Wo)


def shift_add_table(levels) -> list:
    """Shift-add descriptors of 16 levels (each 0, +-2^p or +-(2^p + 2^q), checked by the caller)."""
    out = []
    for v in levels:
        m, d = abs(int(v)), 0
        bits = [i for i in range(31) if m >> i & 1]
        if bits:
            d |= bits[-1] | (1 << 10)
        if len(bits) == 2:
            d |= (bits[0] << 5) | (1 << 11)
        out.append(d | ((1 << 12) if v < 0 else 0))
    return out


def igemm(x, x_kind, x_table, w, w_kind, w_table, channels, ho, wo, geom, shift_add=False):
    """int32 [N, K, Ho, Wo] = conv(x NHWC [N, H, W, XS], w [K, kh, kw, WS]) over ``channels`` channels.
    Tables (int32 [16] levels, or shift-add descriptors) are used for APOT operands only."""
    n, h, wd, xs = x.shape
    k, kh, kw, ws = w.shape
    out = torch.empty((n, k, ho, wo), dtype=torch.int32, device=x.device)
    m = n * ho * wo
    if out.numel() == 0:
        return out.zero_()
    if shift_add:
        bm, bn, bk = (16, 16, 8) if INTERPRET else (32, 32, 8)
    else:
        bm, bn, bk = (32, 32, 32) if INTERPRET else (128, 64, 64)
    dummy = torch.zeros(16, dtype=torch.int32, device=x.device)
    grid = (triton.cdiv(m, bm), triton.cdiv(k, bn))
    torch.library.wrap_triton(_igemm_kernel)[grid](
        x, w, dummy if x_table is None else x_table, dummy if w_table is None else w_table, out, m, k, channels,
        xs, ws, h, wd, ho, wo, *geom, KH=kh, KW=kw, X_KIND=x_kind, W_KIND=w_kind, SHIFT_ADD=shift_add,
        BM=bm, BN=bn, BK=bk)
    return out
