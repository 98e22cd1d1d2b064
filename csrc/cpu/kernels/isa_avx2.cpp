// AVX2 + FMA + BMI2 + POPCNT (compiled with those -m flags only here). Also the emulations of the VNNI and
// 16-lane AVX-512 int8 kernels and of the 8-lane VPOPCNTDQ binary kernel: the same templates with the same
// lane counts and data layouts, built from AVX2 instructions, so that their logic is tested exactly on
// machines that lack those instructions (only the one-instruction traits differ on the real ones).
#include "cpu/kernels/isa.h"

#include <immintrin.h>

namespace cmn::cpu::avx2 {

#include "cpu/kernels/epilogue.inl"
#include "cpu/kernels/int8_direct.inl"
#include "cpu/kernels/int8_winograd.inl"
#include "cpu/kernels/binary_direct.inl"

namespace {
#include "cpu/kernels/traits_ymm.inl"

using Traits = TraitsYmmPairs;

// One vector of rows (8 filters): twice the pixels per register tile (12 accumulators either way).
struct TraitsNarrow : Traits {
  static constexpr int np = 12, max_nv = 1;
};

// vpdpbusd emulated: lane l += sum over bytes b of u8(x.b) * s8(w.b), through two exact vpmaddwd.
inline __m256i dpbusd_emulated(__m256i acc, __m256i x, __m256i w) {
  const __m256i lo8 = _mm256_set1_epi16(0x00ff);
  const __m256i x_even = _mm256_and_si256(x, lo8), x_odd = _mm256_srli_epi16(x, 8);
  const __m256i w_even = _mm256_srai_epi16(_mm256_slli_epi16(w, 8), 8), w_odd = _mm256_srai_epi16(w, 8);
  return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(x_even, w_even), _mm256_madd_epi16(x_odd, w_odd)));
}

struct TraitsEmuVnni : Traits {
  static constexpr bool quads = true;
  static V mac(V acc, V x, V w) { return dpbusd_emulated(acc, x, w); }
};

// 16 int32 lanes as two AVX2 halves.
struct TraitsEmu512 {
  struct V {
    __m256i lo, hi;
  };
  using Half = Traits;  // the remainder of 8 rows
  static constexpr int lanes = 16, np = 6, max_nv = 4;
  static constexpr bool quads = false;
  static V zero() { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
  static V load(const int32_t* p) { return {Traits::load(p), Traits::load(p + 8)}; }
  static V bcast(const int32_t* p) { return {_mm256_set1_epi32(*p), _mm256_set1_epi32(*p)}; }
  static V mac(V acc, V x, V w) { return {Traits::mac(acc.lo, x.lo, w.lo), Traits::mac(acc.hi, x.hi, w.hi)}; }
  static void store(int32_t* p, V v) {
    Traits::store(p, v.lo);
    Traits::store(p + 8, v.hi);
  }
};

// Eight 64-bit lane counts (below 2^31) as eight int32 in one store: the low halves of lo's lanes, then hi's.
inline void store_epi64x8_as_epi32(int32_t* dst, __m256i lo, __m256i hi) {
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const __m256i a = _mm256_permutevar8x32_epi32(lo, even), b = _mm256_permutevar8x32_epi32(hi, even);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_permute2x128_si256(a, b, 0x20));
}

struct TraitsEmu512Narrow : TraitsEmu512 {  // one vector of rows: twice the pixels per register tile
  static constexpr int np = 12, max_nv = 1;
};

struct BitsLut {  // popcounts in bytes (at most 8 per word: 31 words before widening), widened by vpsadbw
  using V = __m256i;
  static constexpr int lanes = 4;
  static constexpr int64_t chunk = 31;
  static V zero() { return _mm256_setzero_si256(); }
  static V load(const uint64_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static V and_bcast(uint64_t word, V v) { return _mm256_and_si256(_mm256_set1_epi64x(int64_t(word)), v); }
  static V add_popc(V acc, V v) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1,
                                         2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    return _mm256_add_epi8(acc, _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(v, low)),
                                                _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low))));
  }
  static V widen_add(V total, V acc) { return _mm256_add_epi64(total, _mm256_sad_epu8(acc, _mm256_setzero_si256())); }
};

// Eight filters per step as two registers, so that the counts leave in one 256-bit store (the epilogue reads
// them with 256-bit loads: two 128-bit stores would defeat store forwarding).
struct BitsLut8 {
  struct V {
    __m256i lo, hi;
  };
  static constexpr int lanes = 8;
  static constexpr int64_t chunk = BitsLut::chunk;
  static V zero() { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
  static V load(const uint64_t* p) { return {BitsLut::load(p), BitsLut::load(p + 4)}; }
  static V and_bcast(uint64_t word, V v) {
    const __m256i b = _mm256_set1_epi64x(int64_t(word));
    return {_mm256_and_si256(b, v.lo), _mm256_and_si256(b, v.hi)};
  }
  static V add_popc(V acc, V v) { return {BitsLut::add_popc(acc.lo, v.lo), BitsLut::add_popc(acc.hi, v.hi)}; }
  static V widen_add(V total, V acc) { return {BitsLut::widen_add(total.lo, acc.lo), BitsLut::widen_add(total.hi, acc.hi)}; }
  static void store_counts(int32_t* dst, V total) { store_epi64x8_as_epi32(dst, total.lo, total.hi); }
};

struct BitsEmuVpopcnt {  // 8 lanes of exact 64-bit popcounts, like a zmm of VPOPCNTDQ
  struct V {
    __m256i lo, hi;
  };
  static constexpr int lanes = 8;
  static constexpr int64_t chunk = int64_t(1) << 40;
  static V zero() { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
  static V load(const uint64_t* p) { return {BitsLut::load(p), BitsLut::load(p + 4)}; }
  static V and_bcast(uint64_t word, V v) { return {BitsLut::and_bcast(word, v.lo), BitsLut::and_bcast(word, v.hi)}; }
  static __m256i popcnt_epi64(__m256i v) { return BitsLut::widen_add(_mm256_setzero_si256(), BitsLut::add_popc(_mm256_setzero_si256(), v)); }
  static V add_popc(V acc, V v) {
    return {_mm256_add_epi64(acc.lo, popcnt_epi64(v.lo)), _mm256_add_epi64(acc.hi, popcnt_epi64(v.hi))};
  }
  static V widen_add(V total, V acc) { return {_mm256_add_epi64(total.lo, acc.lo), _mm256_add_epi64(total.hi, acc.hi)}; }
  static void store_counts(int32_t* dst, V total) { store_epi64x8_as_epi32(dst, total.lo, total.hi); }
};

}  // namespace

void int8_tasks(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s) {
  if (job.flat) return int8_run_flat<Traits>(job, t0, t1, s);
  if (job.Rpad == Traits::lanes) return int8_run<TraitsNarrow>(job, t0, t1, s);
  int8_run<Traits>(job, t0, t1, s);
}
void int8_wino_tasks(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s) {
  if (job.Rpad == Traits::lanes) return int8_wino_run<TraitsNarrow>(job, t0, t1, s);
  int8_wino_run<Traits>(job, t0, t1, s);
}
void int8_tasks_emu_vnni(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s) {
  int8_run<TraitsEmuVnni>(job, t0, t1, s);
}
void int8_tasks_emu_avx512(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s) {
  if (job.flat) return int8_run_flat<TraitsEmu512>(job, t0, t1, s);
  if (job.Rpad <= TraitsEmu512::lanes) return int8_run<TraitsEmu512Narrow>(job, t0, t1, s);
  int8_run<TraitsEmu512>(job, t0, t1, s);
}
void int8_wino_tasks_emu_avx512(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s) {
  if (job.Rpad <= TraitsEmu512::lanes) return int8_wino_run<TraitsEmu512Narrow>(job, t0, t1, s);
  int8_wino_run<TraitsEmu512>(job, t0, t1, s);
}
void binary_tasks(const BinaryJob& job, int64_t t0, int64_t t1, Scratch& s) {
  binary_run<BinaryCountVector<BitsLut8>>(job, t0, t1, s);
}
void binary_tasks_popcnt(const BinaryJob& job, int64_t t0, int64_t t1, Scratch& s) {
  binary_run<BinaryCountScalar>(job, t0, t1, s);
}
void binary_tasks_emu_vpopcnt(const BinaryJob& job, int64_t t0, int64_t t1, Scratch& s) {
  binary_run<BinaryCountVector<BitsEmuVpopcnt>>(job, t0, t1, s);
}

}  // namespace cmn::cpu::avx2
