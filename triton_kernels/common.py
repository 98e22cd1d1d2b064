"""Pieces shared by the Triton kernels: population count, the interpreter switch, tile sizes."""

import os

import triton
import triton.language as tl

# Under TRITON_INTERPRET=1 (CPU tests) kernels run through numpy: no inline PTX there.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def popc(x, USE_ASM: tl.constexpr):
    """Set bits of each 32-bit lane (uint32 in, int32 out): one POPC instruction on a GPU, SWAR elsewhere."""
    if USE_ASM:
        return tl.inline_asm_elementwise("popc.b32 $0, $1;", "=r,r", [x], dtype=tl.int32, is_pure=True, pack=1)
    else:
        x = x - ((x >> 1) & 0x55555555)
        x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
        x = (x + (x >> 4)) & 0x0F0F0F0F
        return ((x * 0x01010101) >> 24).to(tl.int32)


@triton.jit
def output_rows(pid, M, Ho, Wo, BM: tl.constexpr):
    """Rows of an implicit GEMM tile: output pixels flattened as (image, row, column)."""
    rm = pid * BM + tl.arange(0, BM)
    wo = rm % Wo
    t = rm // Wo
    return rm, rm < M, t // Ho, t % Ho, wo


@triton.jit
def store_nchw(out_ptr, acc, rn, n_ok, nb, ho, wo, m_ok, K, Ho, Wo):
    """Write an int32 [BM, BN] tile into an [N, K, Ho, Wo] tensor."""
    off = (nb[:, None] * K + rn[None, :]) * (Ho * Wo) + (ho * Wo + wo)[:, None]
    tl.store(out_ptr + off, acc, mask=m_ok[:, None] & n_ok[None, :])
