// Row-dot "GEMM" microkernels: out[i * so_i + j * so_j] = sum_l op(A[i][l], B[j][l]) for rows of equal length.
// The APoT matmul (rows like nn.Linear) and the shift-add convolution use these.
#pragma once

#include <cstdint>

namespace cmn::cpu {

bool has_avx2();

// Exact integer dot products carried in fp32 lanes. Every element is an integer and every lane's partial sum
// stays within 2^24 because lanes are flushed to int32 every `flush_chunks` chunks of 8 elements
// (flush_chunks = 2^24 / max|a*b|), so no rounding ever happens. On AVX2 without VNNI the FMA units give
// 1.7x the throughput of vpmaddwd, which is why the integer GEMM runs on them. L is a multiple of 8.
// Rows start `ld` floats apart and the first L (a multiple of 8) are summed; accumulate adds to `out`
// instead of overwriting it (for blocking over the row length).
void rowdot_f32_exact(const float* A, int64_t ra, const float* B, int64_t rb, int64_t L, int64_t ld,
                      int64_t flush_chunks, int32_t* out, int64_t so_i, int64_t so_j, bool accumulate = false);
int64_t exact_flush_chunks(int64_t max_abs_product);

// Shift-add: every B element is a code into a table of levels sign * (2^p + 2^q) (either term optional);
// a * level is computed as sign * ((a << p) + (a << q)) — the APoT papers' multiplier-free product.
struct ShiftTable {
  uint8_t p[16], q[16];
  int32_t mask_p[16], mask_q[16];  // 0 or -1: whether the term is present
  int32_t neg[16];                 // 0 or -1: sign
};
void rowdot_shift_add(const int32_t* A, int64_t ra, const uint8_t* Bcodes, int64_t rb, int64_t L,
                      const ShiftTable& t, int32_t* out, int64_t so_i, int64_t so_j);

}  // namespace cmn::cpu
