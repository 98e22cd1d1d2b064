// The int16-pairs traits on 256-bit registers (vpmaddwd: lane l += x.lo16 * w.lo16 + x.hi16 * w.hi16, exact:
// no saturation in the int32 sum). Included inside an instruction-set namespace by the AVX2 unit (its main
// traits) and the AVX-512 unit (the remainder of 8 rows), each compiled with its own flags.
struct TraitsYmmPairs {
  using V = __m256i;
  static constexpr int lanes = 8, np = 6, max_nv = 2;
  static constexpr bool quads = false;
  static V zero() { return _mm256_setzero_si256(); }
  static V load(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static V bcast(const int32_t* p) { return _mm256_set1_epi32(*p); }
  static V mac(V acc, V x, V w) { return _mm256_add_epi32(acc, _mm256_madd_epi16(x, w)); }
  static void store(int32_t* p, V v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
};
