// AVX-512 VPOPCNTDQ: the binary kernel with eight filters per register and one vpopcntq per 512 bits.
// Same template and layout as the AVX2 unit's 8-lane emulation (BitsEmuVpopcnt).
#include "cpu/kernels/isa.h"

#include <immintrin.h>

namespace cmn::cpu::avx512_vpopcnt {

#include "cpu/kernels/epilogue.inl"
#include "cpu/kernels/binary_direct.inl"

namespace {
struct Bits {
  using V = __m512i;
  static constexpr int lanes = 8;
  static constexpr int64_t chunk = int64_t(1) << 40;
  static V zero() { return _mm512_setzero_si512(); }
  static V load(const uint64_t* p) { return _mm512_loadu_si512(p); }
  static V and_bcast(uint64_t word, V v) { return _mm512_and_si512(_mm512_set1_epi64(int64_t(word)), v); }
  static V add_popc(V acc, V v) { return _mm512_add_epi64(acc, _mm512_popcnt_epi64(v)); }
  static V widen_add(V total, V acc) { return _mm512_add_epi64(total, acc); }
  static void store_counts(int32_t* dst, V acc) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_cvtepi64_epi32(acc));
  }
};
}  // namespace

void binary_tasks(const BinaryJob& job, int64_t t0, int64_t t1, Scratch& s) {
  binary_run<BinaryCountVector<Bits>>(job, t0, t1, s);
}

}  // namespace cmn::cpu::avx512_vpopcnt
