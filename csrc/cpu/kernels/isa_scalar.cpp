// Baseline instruction set (no -m flags): the fallback on any CPU, and the epilogue of the ATen-side paths.
#include "cpu/kernels/isa.h"

namespace cmn::cpu::scalar {

#include "cpu/kernels/epilogue.inl"
#include "cpu/kernels/int8_direct.inl"
#include "cpu/kernels/int8_winograd.inl"
#include "cpu/kernels/binary_direct.inl"

namespace {
// Eight int32 lanes in plain arrays: the compiler maps the pair products onto SSE2 pmaddwd.
struct Traits {
  struct V {
    int32_t v[8];
  };
  static constexpr int lanes = 8, np = 4, max_nv = 2;
  static constexpr bool quads = false;
  static V zero() { return V{}; }
  static V load(const int32_t* p) {
    V r;
    for (int l = 0; l < 8; ++l) r.v[l] = p[l];
    return r;
  }
  static V bcast(const int32_t* p) {
    V r;
    for (int l = 0; l < 8; ++l) r.v[l] = *p;
    return r;
  }
  static V mac(V acc, V x, V w) {
    for (int l = 0; l < 8; ++l) {
      const int32_t xl = int16_t(x.v[l] & 0xffff), xh = int16_t(uint32_t(x.v[l]) >> 16);
      const int32_t wl = int16_t(w.v[l] & 0xffff), wh = int16_t(uint32_t(w.v[l]) >> 16);
      acc.v[l] += xl * wl + xh * wh;
    }
    return acc;
  }
  static void store(int32_t* p, V v) {
    for (int l = 0; l < 8; ++l) p[l] = v.v[l];
  }
};
}  // namespace

void int8_tasks(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s) {
  if (job.flat) return int8_run_flat<Traits>(job, t0, t1, s);
  int8_run<Traits>(job, t0, t1, s);
}
void int8_wino_tasks(const Int8Job& job, int64_t t0, int64_t t1, Scratch& s) {
  int8_wino_run<Traits>(job, t0, t1, s);
}

void binary_tasks(const BinaryJob& job, int64_t t0, int64_t t1, Scratch& s) {
  binary_run<BinaryCountScalar>(job, t0, t1, s);
}

void epilogue(const EpiView& e, int64_t n, int64_t p0, int64_t np, const int32_t* acc, int64_t ld, float* y) {
  epi_pixels(e, n, p0, np, acc, ld, y);
}

}  // namespace cmn::cpu::scalar
