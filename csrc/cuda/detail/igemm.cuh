// Integer implicit GEMM on tensor cores, shared by every CUDA conv / matmul of cmn_ext.
//
// Operands are 32-bit words: 4 int8 / uint8 values, or 32 bits of a binary tensor. Activations are NHWC
// words [N, H, W, CW]; weights are rows [R, KH * KW * CW] in (kh, kw, word) order. Row m of the GEMM is the
// output pixel (n, ho, wo), column r a filter, and the reduction runs over (tap, word) with zero words for
// taps outside the frame (exact zero padding). The result is acc [N, R, Ho * Wo] int32 (M = N * Ho * Wo rows
// stored channel-major per image, see acc_index): the epilogue then reads it with coalesced loads while
// writing NCHW; for a matmul (Ho = Wo = 1) it is plainly [M, R].
//
//   S8S8   mma.sync m16n8k32 s8 x s8        (int8 conv, decoded APoT levels)
//   U8S8   mma.sync m16n8k32 u8 x s8        (uint8 activations)
//   B1AND  mma.sync m16n8k256 b1 AND+popc   (binary conv: Hopper has only the AND form)
//
// All three MMAs take the same fragment layout in units of 32-bit words (a k-step is 8 words), so one tile
// loop serves them: A regs {A[g][t], A[g+8][t], A[g][4+t], A[g+8][4+t]}, B regs {B[n=g][t], B[n=g][4+t]}
// with g = lane / 4, t = lane % 4, and C regs {C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]}.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace cmn::cuda {

enum class MmaKind { S8S8, U8S8, B1And };

struct ConvShape {
  int N, H, W, CW;     // input images, frame, words per pixel
  int Ho, Wo, KH, KW;  // output frame, kernel
  int sh, sw, ph, pw, dh, dw;
  __host__ __device__ int64_t M() const { return int64_t(N) * Ho * Wo; }
  __host__ __device__ int64_t row_len() const { return int64_t(KH) * KW * CW; }
  __host__ __device__ int64_t P() const { return int64_t(Ho) * Wo; }
};

// Where GEMM element (row m = (n, pixel), column r) lives in acc [N, R, P].
__host__ __device__ __forceinline__ int64_t acc_index(const ConvShape& s, int64_t R, int64_t m, int64_t r) {
  const int64_t P = s.P();
  return ((m / P) * R + r) * P + m % P;
}

// acc [N, R, P] = implicit GEMM of x words and w rows (both device pointers), on `stream`.
void igemm(MmaKind kind, const uint32_t* x, const uint32_t* w, int32_t* acc, const ConvShape& s, int R,
           cudaStream_t stream);

}  // namespace cmn::cuda
