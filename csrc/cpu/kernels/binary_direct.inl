// Exact binary direct convolution on NHWC bit-packed inputs. Included inside an instruction-set namespace
// after epilogue.inl. A pixel's patch is the concatenation of its taps' C bits (out-of-frame taps are zero
// bits), packed into nw 64-bit words exactly like the prepacked filters (cpu/prepack.cpp), so that
//   c = popc(patch AND filter)
// is one pass over nw words. Both encodings are affine in c (w bit 1 means -1):
//   "01":  dot = popc(a) - 2 c
//   "pm1": dot = n_valid - 2 popc(a) - 2 popc(w over the valid taps) + 4 c      (a bit 1 means -1)
// A popcount strategy B provides count(patches, np, job, cnt): cnt[j * Kpad + k] = c of pixel j, filter k.

constexpr int64_t kBinaryTile = 4;  // pixels per tile

static inline int popc64(uint64_t v) { return __builtin_popcountll(v); }

// Scalar strategy: per filter, one pass over its nw words (w_rows layout); popcnt where the flags allow.
struct BinaryCountScalar {
  static void count(const uint64_t* patches, int64_t np, const BinaryJob& J, int32_t* cnt) {
    const int64_t nw = J.nw, K = J.g.K;
    for (int64_t j = 0; j < np; ++j) {
      const uint64_t* pa = patches + j * nw;
      int32_t* c = cnt + j * J.Kpad;
      for (int64_t k = 0; k < K; ++k) {
        const uint64_t* wr = J.w_rows + k * nw;
        int32_t s = 0;
        for (int64_t i = 0; i < nw; ++i) s += popc64(pa[i] & wr[i]);
        c[k] = s;
      }
    }
  }
};

// The image's pixels as 64-bit words: cw64 = ceil(C / 64) words per pixel (tail bits cleared), then one
// all-zero pixel that out-of-frame taps point at.
static void binary_convert_image(const BinaryJob& J, int64_t n, int64_t cw64, uint64_t* pix) {
  const int64_t HW = J.g.H * J.g.W, C = J.g.C, xw = J.x_words;
  const uint32_t* src = J.x + n * HW * xw;
  const uint32_t tail = (C % 32) ? ((1u << (C % 32)) - 1u) : ~0u;
  for (int64_t i = 0; i < HW; ++i) {
    const uint32_t* s = src + i * xw;
    uint64_t* d = pix + i * cw64;
    for (int64_t w = 0; w < cw64; ++w) {
      const int64_t lo = 2 * w, hi = 2 * w + 1;
      const uint64_t vlo = lo < xw ? (lo == xw - 1 ? (s[lo] & tail) : s[lo]) : 0u;
      const uint64_t vhi = hi < xw ? (hi == xw - 1 ? (s[hi] & tail) : s[hi]) : 0u;
      d[w] = vlo | (vhi << 32);
    }
  }
  for (int64_t w = 0; w < cw64; ++w) pix[HW * cw64 + w] = 0;
}

// Whole taps per word with the tap width known at compile time (the common CIFAR / ResNet widths).
template <int C>
static inline void binary_patch_small(const uint64_t* pix, const int32_t* off, int64_t taps, int64_t nw, uint64_t* pa) {
  constexpr int per_word = 64 / C;
  int64_t t = 0;
  for (int64_t wd = 0; wd < nw; ++wd) {
    uint64_t v = 0;
#pragma GCC unroll 8
    for (int i = 0; i < per_word; ++i, ++t)
      if (t < taps) v |= pix[off[t]] << (i * C);
    pa[wd] = v;
  }
}

// Patch of one pixel: taps concatenated at bit t * C (the prepacked filters' layout).
static inline void binary_patch(const uint64_t* pix, int64_t cw64, int64_t C, const int32_t* off, int64_t taps,
                                int64_t nw, uint64_t* pa) {
  if (C % 64 == 0) {  // whole words per tap
    for (int64_t t = 0; t < taps; ++t) {
      const uint64_t* src = pix + int64_t(off[t]) * cw64;
      for (int64_t w = 0; w < cw64; ++w) pa[t * cw64 + w] = src[w];
    }
    return;
  }
  if (C == 16) return binary_patch_small<16>(pix, off, taps, nw, pa);
  if (C == 32) return binary_patch_small<32>(pix, off, taps, nw, pa);
  if (C == 8) return binary_patch_small<8>(pix, off, taps, nw, pa);
  if (64 % C == 0) {  // whole taps per word, built in a register
    int64_t t = 0;
    for (int64_t wd = 0; wd < nw; ++wd) {
      uint64_t v = 0;
      for (int64_t sh = 0; sh < 64 && t < taps; sh += C, ++t) v |= pix[off[t]] << sh;
      pa[wd] = v;
    }
    return;
  }
  for (int64_t i = 0; i < nw; ++i) pa[i] = 0;
  for (int64_t t = 0; t < taps; ++t) {  // any C: shift each 64-bit piece into place
    const uint64_t* src = pix + int64_t(off[t]) * cw64;
    for (int64_t w = 0; w < cw64; ++w) {
      const uint64_t v = src[w];
      const int64_t pos = t * C + 64 * w, wd = pos >> 6, sh = pos & 63;
      pa[wd] |= v << sh;
      if (sh && wd + 1 < nw) pa[wd + 1] |= v >> (64 - sh);
    }
  }
}

// bits[k] = (mul[k] * (xpop - 2 c[k]) >= thr[k]) for the "01" integer-threshold epilogue, packed 32 per word.
static inline void threshold_bits(const int32_t* c, int32_t xpop, const int32_t* mul, const int32_t* thr, int64_t K,
                                  uint32_t* out) {
  const int64_t words = (K + 31) / 32;
  for (int64_t wd = 0; wd < words; ++wd) {
    uint32_t bits = 0;
    const int64_t kb = wd * 32, ke = epi_min(K, kb + 32);
    int64_t k = kb;
#if defined(__AVX2__)
    const __m256i xp = _mm256_set1_epi32(xpop), one = _mm256_set1_epi32(1);
    for (; k + 8 <= ke; k += 8) {
      const __m256i cv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + k));
      const __m256i dot = _mm256_sub_epi32(xp, _mm256_add_epi32(cv, cv));
      const __m256i v = _mm256_mullo_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(mul + k)), dot);
      const __m256i t = _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(thr + k)), one);
      bits |= uint32_t(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(v, t)))) << (k - kb);
    }
#endif
    for (; k < ke; ++k) bits |= uint32_t(mul[k] * (xpop - 2 * c[k]) >= thr[k]) << (k - kb);
    out[wd] = bits;
  }
}

template <class B>
static void binary_run(const BinaryJob& J, int64_t t0, int64_t t1, Scratch& s) {
  const Geom& g = J.g;
  const int64_t taps = g.taps(), P = g.pixels(), HW = g.H * g.W, C = g.C, nw = J.nw;
  const int64_t cw64 = (C + 63) / 64;
  uint64_t* pix = reinterpret_cast<uint64_t*>(s.data);
  uint64_t* patches = pix + (HW + 1) * cw64;
  int32_t* cnt = reinterpret_cast<int32_t*>(patches + kBinaryTile * nw);
  int32_t* acc = cnt + kBinaryTile * J.Kpad;
  float* y = reinterpret_cast<float*>(acc + kBinaryTile * J.Kpad);
  const int64_t ppt = J.pixels_per_task, per_image = (P + ppt - 1) / ppt;
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t n = task / per_image, pb = (task % per_image) * ppt, pe = epi_min(P, pb + ppt);
    if (s.cached_image != n) {
      binary_convert_image(J, n, cw64, pix);
      s.cached_image = n;
    }
    for (int64_t p = pb; p < pe; p += kBinaryTile) {
      const int64_t np = epi_min(kBinaryTile, pe - p);
      for (int64_t j = 0; j < np; ++j) binary_patch(pix, cw64, C, J.offsets + (p + j) * taps, taps, nw, patches + j * nw);
      B::count(patches, np, J, cnt);
      if (J.bit_mul) {  // bits straight from the integer dot products (see BinaryJob::bit_mul)
        const int64_t words = (g.K + 31) / 32;
        for (int64_t j = 0; j < np; ++j) {
          const uint64_t* pa = patches + j * nw;
          int32_t xpop = 0;
          for (int64_t i = 0; i < nw; ++i) xpop += popc64(pa[i]);
          threshold_bits(cnt + j * J.Kpad, xpop, J.bit_mul, J.bit_thr, g.K,
                         static_cast<uint32_t*>(J.epi.out) + (n * P + p + j) * words);
        }
        continue;
      }
      for (int64_t j = 0; j < np; ++j) {
        const uint64_t* pa = patches + j * nw;
        int32_t xpop = 0;  // out-of-frame taps are zero bits: the patch's popcount is popc(a) over valid taps
        for (int64_t i = 0; i < nw; ++i) xpop += popc64(pa[i]);
        const int32_t* c = cnt + j * J.Kpad;
        int32_t* a = acc + j * J.Kpad;
        if (!J.pm1) {
          for (int64_t k = 0; k < g.K; ++k) a[k] = xpop - 2 * c[k];
          continue;
        }
        const int64_t q = p + j;
        const int32_t base = int32_t(J.valid_taps[q] * C) - 2 * xpop;
        if (J.valid_taps[q] == taps) {
          for (int64_t k = 0; k < g.K; ++k) a[k] = base - 2 * J.w_total[k] + 4 * c[k];
        } else {
          const int32_t* off = J.offsets + q * taps;
          for (int64_t k = 0; k < g.K; ++k) {
            int32_t wv = J.w_total[k];
            const int32_t* tp = J.w_tappop + k * taps;
            for (int64_t t = 0; t < taps; ++t)
              if (off[t] == HW) wv -= tp[t];
            a[k] = base - 2 * wv + 4 * c[k];
          }
        }
      }
      epi_pixels(J.epi, n, p, np, acc, J.Kpad, y);
    }
  }
}

// Vector strategy over filters (w_cols layout): a traits class BV with BV::lanes 64-bit lanes provides
//   V zero(), V load(p), V and_bcast(word, v)   (word & v in every lane)
//   V add_popc(acc, v)                           per-lane popcount added to a narrow accumulator
//   V widen_add(total, acc)                      the narrow accumulator added to 64-bit lane sums
//   store_counts(dst, total)                     lanes int32 counts
//   chunk                                        words a narrow accumulator can take before widening
template <class BV>
struct BinaryCountVector {
  static void count(const uint64_t* patches, int64_t np, const BinaryJob& J, int32_t* cnt) {
    const int64_t nw = J.nw, K = J.g.K;
    for (int64_t kb = 0; kb < K; kb += BV::lanes) {
      if (nw <= BV::chunk) {  // one narrow pass (the common case): fewer live registers
        typename BV::V acc[kBinaryTile];
#pragma GCC unroll 8
        for (int j = 0; j < kBinaryTile; ++j) acc[j] = BV::zero();
        for (int64_t i = 0; i < nw; ++i) {
          const typename BV::V wv = BV::load(J.w_cols + i * J.Kpad + kb);
#pragma GCC unroll 8
          for (int j = 0; j < kBinaryTile; ++j) acc[j] = BV::add_popc(acc[j], BV::and_bcast(patches[j * nw + i], wv));
        }
        for (int64_t j = 0; j < np; ++j) BV::store_counts(cnt + j * J.Kpad + kb, BV::widen_add(BV::zero(), acc[j]));
        continue;
      }
      typename BV::V total[kBinaryTile];
#pragma GCC unroll 8
      for (int j = 0; j < kBinaryTile; ++j) total[j] = BV::zero();
      for (int64_t i0 = 0; i0 < nw; i0 += BV::chunk) {
        const int64_t i1 = epi_min(nw, i0 + BV::chunk);
        typename BV::V acc[kBinaryTile];
#pragma GCC unroll 8
        for (int j = 0; j < kBinaryTile; ++j) acc[j] = BV::zero();
        for (int64_t i = i0; i < i1; ++i) {
          const typename BV::V wv = BV::load(J.w_cols + i * J.Kpad + kb);
#pragma GCC unroll 8
          for (int j = 0; j < kBinaryTile; ++j) acc[j] = BV::add_popc(acc[j], BV::and_bcast(patches[j * nw + i], wv));
        }
#pragma GCC unroll 8
        for (int j = 0; j < kBinaryTile; ++j) total[j] = BV::widen_add(total[j], acc[j]);
      }
      for (int64_t j = 0; j < np; ++j) BV::store_counts(cnt + j * J.Kpad + kb, total[j]);
    }
  }
};
