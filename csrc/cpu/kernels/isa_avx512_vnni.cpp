// AVX-512 VNNI: the int8 kernel on uint8 x int8 quads (vpdpbusd zmm, four exact products per lane). Same
// template and layout as the AVX2 unit's VNNI emulation (TraitsEmuVnni), tested on every AVX2 machine.
#include "cpu/kernels/isa.h"

#include <immintrin.h>

namespace cmn::cpu::avx512_vnni {

#include "cpu/kernels/epilogue.inl"
#include "cpu/kernels/int8_direct.inl"

namespace {
struct Traits256 {  // the remainder of 8 rows: EVEX vpdpbusd on 256-bit registers (AVX-512 VL)
  using V = __m256i;
  static constexpr int lanes = 8, np = 6, max_nv = 2;
  static constexpr bool quads = true;
  static V zero() { return _mm256_setzero_si256(); }
  static V load(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static V bcast(const int32_t* p) { return _mm256_set1_epi32(*p); }
  static V mac(V acc, V x, V w) { return _mm256_dpbusd_epi32(acc, x, w); }
  static void store(int32_t* p, V v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
};

struct Traits {
  using V = __m512i;
  using Half = Traits256;
  static constexpr int lanes = 16, np = 6, max_nv = 4;
  static constexpr bool quads = true;
  static V zero() { return _mm512_setzero_si512(); }
  static V load(const int32_t* p) { return _mm512_loadu_si512(p); }
  static V bcast(const int32_t* p) { return _mm512_set1_epi32(*p); }
  static V mac(V acc, V x, V w) { return _mm512_dpbusd_epi32(acc, x, w); }
  static void store(int32_t* p, V v) { _mm512_storeu_si512(p, v); }
};
}  // namespace

void int8_tasks(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s) { int8_run<Traits>(job, t0, t1, s); }

}  // namespace cmn::cpu::avx512_vnni
