// AVX-512 F/BW/DQ/VL: the int8 kernel on 16 int32 lanes (vpmaddwd zmm). Same template as the AVX2 unit's
// 16-lane emulation (TraitsEmu512), which the tests run on every AVX2 machine.
#include "cpu/kernels/isa.h"

#include <immintrin.h>

namespace cmn::cpu::avx512 {

#include "cpu/kernels/epilogue.inl"
#include "cpu/kernels/int8_direct.inl"
#include "cpu/kernels/int8_winograd.inl"

namespace {
#include "cpu/kernels/traits_ymm.inl"

struct Traits {
  using V = __m512i;
  using Half = TraitsYmmPairs;  // the remainder of 8 rows
  static constexpr int lanes = 16, np = 6, max_nv = 4;
  static constexpr bool quads = false;
  static V zero() { return _mm512_setzero_si512(); }
  static V load(const int32_t* p) { return _mm512_loadu_si512(p); }
  static V bcast(const int32_t* p) { return _mm512_set1_epi32(*p); }
  static V mac(V acc, V x, V w) { return _mm512_add_epi32(acc, _mm512_madd_epi16(x, w)); }
  static void store(int32_t* p, V v) { _mm512_storeu_si512(p, v); }
};
struct TraitsNarrow : Traits {  // one vector of rows (up to 16 filters): twice the pixels per register tile
  static constexpr int np = 12, max_nv = 1;
};
}  // namespace

void int8_tasks(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s) {
  if (job.flat) return int8_run_flat<Traits>(job, t0, t1, s);
  if (job.Rpad <= Traits::lanes) return int8_run<TraitsNarrow>(job, t0, t1, s);
  int8_run<Traits>(job, t0, t1, s);
}
void int8_wino_tasks(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s) {
  if (job.Rpad <= Traits::lanes) return int8_wino_run<TraitsNarrow>(job, t0, t1, s);
  int8_wino_run<Traits>(job, t0, t1, s);
}

}  // namespace cmn::cpu::avx512
