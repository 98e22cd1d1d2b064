#include "cpu/detail/int4_decode.h"

#include <immintrin.h>

#include <cstdlib>

namespace cmn::cpu {

static inline uint8_t code_at(const uint8_t* src, int64_t i) {
  return (i & 1) ? (src[i >> 1] >> 4) : (src[i >> 1] & 0x0f);
}

__attribute__((target("avx2"))) static int64_t decode_int4_f32_avx2(const uint8_t* src, int64_t k,
                                                                    const LevelTable& levels, float* dst) {
  alignas(16) int8_t lut[16];
  for (int c = 0; c < 16; ++c) lut[c] = static_cast<int8_t>(levels.v[c]);
  const __m128i tbl = _mm_load_si128(reinterpret_cast<const __m128i*>(lut));
  const __m128i m4 = _mm_set1_epi8(0x0f);
  const int64_t blocks = k / 32;  // 16 bytes -> 32 values
  for (int64_t b = 0; b < blocks; ++b) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16 * b));
    const __m128i lo = _mm_shuffle_epi8(tbl, _mm_and_si128(bytes, m4));
    const __m128i hi = _mm_shuffle_epi8(tbl, _mm_and_si128(_mm_srli_epi16(bytes, 4), m4));
    const __m128i v0 = _mm_unpacklo_epi8(lo, hi), v1 = _mm_unpackhi_epi8(lo, hi);
    float* d = dst + 32 * b;
    _mm256_storeu_ps(d + 0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v0)));
    _mm256_storeu_ps(d + 8, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v0, 8))));
    _mm256_storeu_ps(d + 16, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v1)));
    _mm256_storeu_ps(d + 24, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v1, 8))));
  }
  return blocks * 32;
}

void decode_int4_f32(const uint8_t* src, int64_t k, const LevelTable& levels, float* dst) {
  int64_t i = 0;
  if (levels.fits_int8 && has_avx2()) i = decode_int4_f32_avx2(src, k, levels, dst);
  for (; i < k; ++i) dst[i] = static_cast<float>(levels.v[code_at(src, i)]);
}

void decode_int4_i32(const uint8_t* src, int64_t k, const LevelTable& levels, int32_t* dst) {
  for (int64_t i = 0; i < k; ++i) dst[i] = levels.v[code_at(src, i)];
}

void unpack_int4_codes(const uint8_t* src, int64_t k, uint8_t* dst) {
  for (int64_t i = 0; i < k; ++i) dst[i] = code_at(src, i);
}

ShiftTable make_shift_table(const LevelTable& levels) {
  ShiftTable t{};
  for (int c = 0; c < 16; ++c) {
    const int64_t v = levels.v[c];
    uint64_t m = static_cast<uint64_t>(std::llabs(v));
    t.neg[c] = v < 0 ? -1 : 0;
    t.mask_p[c] = t.mask_q[c] = 0;
    t.p[c] = t.q[c] = 0;
    if (m == 0) continue;
    t.p[c] = static_cast<uint8_t>(__builtin_ctzll(m));
    t.mask_p[c] = -1;
    m &= m - 1;  // drop the lowest set bit
    if (m) {
      t.q[c] = static_cast<uint8_t>(__builtin_ctzll(m));
      t.mask_q[c] = -1;
    }
  }
  return t;
}

}  // namespace cmn::cpu
