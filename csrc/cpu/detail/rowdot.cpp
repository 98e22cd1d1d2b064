#include "cpu/detail/rowdot.h"

#include "cpu/kernels/dispatch.h"

#include <immintrin.h>

#include <algorithm>

namespace cmn::cpu {

bool has_avx2() {
  static const bool ok = cpu_features().avx2 && cpu_features().fma;
  return ok;
}

int64_t exact_flush_chunks(int64_t max_abs_product) {
  const int64_t limit = int64_t(1) << 24;
  return std::max<int64_t>(1, limit / std::max<int64_t>(1, max_abs_product));
}

// ---------------------------------------------------------------------------------------------------------
// Portable fallback (no AVX2): integer multiply-adds.
// ---------------------------------------------------------------------------------------------------------
static void rowdot_f32_scalar(const float* A, int64_t ra, const float* B, int64_t rb, int64_t L, int64_t ld,
                              int32_t* out, int64_t so_i, int64_t so_j, bool accumulate) {
  for (int64_t i = 0; i < ra; ++i)
    for (int64_t j = 0; j < rb; ++j) {
      int64_t s = accumulate ? out[i * so_i + j * so_j] : 0;
      for (int64_t l = 0; l < L; ++l) s += static_cast<int64_t>(A[i * ld + l]) * static_cast<int64_t>(B[j * ld + l]);
      out[i * so_i + j * so_j] = static_cast<int32_t>(s);
    }
}

// ---------------------------------------------------------------------------------------------------------
// AVX2 exact fp32 lanes: register tile 3 x 4 (12 accumulators), lanes flushed to int32 before they could
// leave the range where every integer is representable.
// ---------------------------------------------------------------------------------------------------------
__attribute__((target("avx2,fma"))) static inline int64_t hsum_lanes_to_int(__m256 v) {
  const __m256i x = _mm256_cvtps_epi32(v);  // exact: lanes hold integers below 2^24
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

template <int MR, int NR>
__attribute__((target("avx2,fma"))) static void f32_tile(const float* A, const float* B, int64_t L, int64_t ld,
                                                         int64_t flush_chunks, int32_t* out, int64_t so_i,
                                                         int64_t so_j, bool accumulate) {
  int64_t sums[MR][NR] = {};
  const int64_t chunks = L / 8;
  for (int64_t c0 = 0; c0 < chunks; c0 += flush_chunks) {
    const int64_t c1 = std::min<int64_t>(chunks, c0 + flush_chunks);
    __m256 acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
    for (int64_t c = c0; c < c1; ++c) {
      __m256 b[NR];
      for (int j = 0; j < NR; ++j) b[j] = _mm256_loadu_ps(B + j * ld + c * 8);
      for (int i = 0; i < MR; ++i) {
        const __m256 a = _mm256_loadu_ps(A + i * ld + c * 8);
        for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(a, b[j], acc[i][j]);
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) sums[i][j] += hsum_lanes_to_int(acc[i][j]);
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      int32_t& o = out[i * so_i + j * so_j];
      o = static_cast<int32_t>((accumulate ? o : 0) + sums[i][j]);
    }
}

void rowdot_f32_exact(const float* A, int64_t ra, const float* B, int64_t rb, int64_t L, int64_t ld,
                      int64_t flush_chunks, int32_t* out, int64_t so_i, int64_t so_j, bool accumulate) {
  if (!has_avx2()) return rowdot_f32_scalar(A, ra, B, rb, L, ld, out, so_i, so_j, accumulate);
  constexpr int MR = 3, NR = 4;
  using Fn = void (*)(const float*, const float*, int64_t, int64_t, int64_t, int32_t*, int64_t, int64_t, bool);
  static constexpr Fn tiles[MR][NR] = {{f32_tile<1, 1>, f32_tile<1, 2>, f32_tile<1, 3>, f32_tile<1, 4>},
                                       {f32_tile<2, 1>, f32_tile<2, 2>, f32_tile<2, 3>, f32_tile<2, 4>},
                                       {f32_tile<3, 1>, f32_tile<3, 2>, f32_tile<3, 3>, f32_tile<3, 4>}};
  for (int64_t i = 0; i < ra; i += MR) {
    const int mr = static_cast<int>(std::min<int64_t>(MR, ra - i));
    for (int64_t j = 0; j < rb; j += NR) {
      const int nr = static_cast<int>(std::min<int64_t>(NR, rb - j));
      tiles[mr - 1][nr - 1](A + i * ld, B + j * ld, L, ld, flush_chunks, out + i * so_i + j * so_j, so_i, so_j,
                            accumulate);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Shift-add: the literal multiplier-free arithmetic. Kept scalar and simple on purpose: it is the reference
// the int8 path is checked against, not the fast path.
// ---------------------------------------------------------------------------------------------------------
void rowdot_shift_add(const int32_t* A, int64_t ra, const uint8_t* Bcodes, int64_t rb, int64_t L,
                      const ShiftTable& t, int32_t* out, int64_t so_i, int64_t so_j) {
  for (int64_t i = 0; i < ra; ++i) {
    const int32_t* a = A + i * L;
    for (int64_t j = 0; j < rb; ++j) {
      const uint8_t* c = Bcodes + j * L;
      uint32_t acc = 0;  // unsigned: two's-complement wrap-free by the caller's range check
      for (int64_t l = 0; l < L; ++l) {
        const uint8_t code = c[l];
        const uint32_t v = static_cast<uint32_t>(a[l]);
        const uint32_t term = ((v << t.p[code]) & static_cast<uint32_t>(t.mask_p[code])) +
                              ((v << t.q[code]) & static_cast<uint32_t>(t.mask_q[code]));
        const uint32_t neg = static_cast<uint32_t>(t.neg[code]);
        acc += (term ^ neg) - neg;  // conditional negate
      }
      out[i * so_i + j * so_j] = static_cast<int32_t>(acc);
    }
  }
}

}  // namespace cmn::cpu
