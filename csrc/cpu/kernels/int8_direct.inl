// Exact int8 / APoT direct convolution on NHWC inputs (no im2col). Included inside an instruction-set
// namespace after epilogue.inl and the traits of that instruction set. A traits class T provides:
//   V                      the vector type, T::lanes int32 lanes (output channels)
//   quads                  false: int16 pairs (vpmaddwd: two int16 products per lane)
//                          true:  uint8 x int8 quads (VNNI vpdpbusd: four products per lane)
//   zero(), load(p), bcast(p), mac(acc, x, w), store(p, v)
//   np (pixels per register tile) and max_nv (vectors of output channels per tile)
// Per task (one image, a range of output pixels): the image is converted once into the thread's scratch
// (int16 pairs or uint8 quads per pixel, plus an all-zero "pixel" that out-of-frame taps point at, which
// makes zero padding exact without branches), then every tile of np pixels x (nv * lanes) channels
// accumulates over taps and channel groups in registers, and the epilogue writes the pixels.
// Every product and sum is exact in int32: validate.cpp refuses shapes whose worst case could overflow.

// Pixel j's input is at xb + off[j * taps + t] * stride for tap t; cs pairs (or quads) per tap are reduced.
template <class T, int NP, int NV>
static void int8_tile(const int32_t* xb, int64_t stride, int64_t cs, const int32_t* off, int64_t taps,
                      const int32_t* w, int64_t rpad, int32_t* out, int64_t ld) {
  typename T::V acc[NP][NV];
#pragma GCC unroll 16
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[j][v] = T::zero();
  for (int64_t t = 0; t < taps; ++t) {
    const int32_t* px[NP];
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j) px[j] = xb + int64_t(off[j * taps + t]) * stride;
    const int32_t* wt = w + t * cs * rpad;
    for (int64_t c = 0; c < cs; ++c) {
      typename T::V wv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) wv[v] = T::load(wt + c * rpad + v * T::lanes);
#pragma GCC unroll 16
      for (int j = 0; j < NP; ++j) {
        const typename T::V b = T::bcast(px[j] + c);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[j][v] = T::mac(acc[j][v], b, wv[v]);
      }
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) T::store(out + j * ld + v * T::lanes, acc[j][v]);
}

// All row blocks of one pixel tile: tiles of up to max_nv vectors, and a remainder of 8 rows through the
// half-width traits (T::Half) when the vectors are 16 lanes wide (rows are padded to a multiple of 8 only).
template <class T>
static void int8_row_blocks(const int32_t* xb, int64_t stride, int64_t cs, const int32_t* off, int64_t taps,
                            const int32_t* w, int64_t rpad, int32_t* out) {
  for (int64_t rb = 0; rb < rpad;) {
    const int64_t left = (rpad - rb) / T::lanes;
    if constexpr (T::max_nv >= 4) {
      if (left >= 4) {
        int8_tile<T, T::np, 4>(xb, stride, cs, off, taps, w + rb, rpad, out + rb, rpad);
        rb += 4 * T::lanes;
        continue;
      }
    }
    if constexpr (T::max_nv >= 3) {
      if (left == 3) {
        int8_tile<T, T::np, 3>(xb, stride, cs, off, taps, w + rb, rpad, out + rb, rpad);
        rb += 3 * T::lanes;
        continue;
      }
    }
    if (left >= 2) {
      int8_tile<T, T::np, 2>(xb, stride, cs, off, taps, w + rb, rpad, out + rb, rpad);
      rb += 2 * T::lanes;
    } else if (left == 1) {
      int8_tile<T, T::np, 1>(xb, stride, cs, off, taps, w + rb, rpad, out + rb, rpad);
      rb += T::lanes;
    } else {
      if constexpr (T::lanes > 8) {
        int8_tile<typename T::Half, T::np, 1>(xb, stride, cs, off, taps, w + rb, rpad, out + rb, rpad);
      }
      rb += 8;
    }
  }
}

// C nibble codes (element 2j in the low nibble of byte j) -> int16 levels through the job's level table.
static inline void decode_nibbles_i16(const Int8Job& J, const uint8_t* s, int64_t C, int16_t* di) {
  int64_t c = 0;
#if defined(__AVX2__)
  if (J.levels_fit_int8) {  // 32 nibbles -> 32 int16 levels: two table lookups (vpshufb)
    const __m128i table = _mm_loadu_si128(reinterpret_cast<const __m128i*>(J.levels8));
    const __m128i low = _mm_set1_epi8(0x0f);
    for (; c + 32 <= C; c += 32) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + c / 2));
      const __m128i lo = _mm_shuffle_epi8(table, _mm_and_si128(b, low));
      const __m128i hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(b, 4), low));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(di + c), _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(lo, hi)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(di + c + 16), _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(lo, hi)));
    }
    if (c + 16 <= C) {
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + c / 2));
      const __m128i lo = _mm_shuffle_epi8(table, _mm_and_si128(b, low));
      const __m128i hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(b, 4), low));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(di + c), _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(lo, hi)));
      c += 16;
    }
  }
#endif
  for (; c < C; ++c) di[c] = J.levels[(s[c >> 1] >> ((c & 1) * 4)) & 15];
}

// The image n of the job in the kernel's input format: pixel i at xbuf + i * cs int32 words, pixel H*W zero.
template <bool QUADS>
static void int8_convert_image(const Int8Job& J, int64_t n, int32_t* xbuf, int64_t cs) {
  const int64_t HW = J.g.H * J.g.W, C = J.g.C, pb = J.x_pixel_bytes;
  const uint8_t* src = J.x + n * HW * pb;
  if (!QUADS) {
    int16_t* d = reinterpret_cast<int16_t*>(xbuf);
    const int64_t dw = 2 * cs;  // int16 per pixel
    if (J.in == InCode::U8 && C == dw) {
      for (int64_t i = 0; i < HW * C; ++i) d[i] = int16_t(src[i]);
    } else if (J.in == InCode::S8 && C == dw) {
      const int8_t* s8 = reinterpret_cast<const int8_t*>(src);
      for (int64_t i = 0; i < HW * C; ++i) d[i] = int16_t(s8[i]);
    } else {
      for (int64_t i = 0; i < HW; ++i) {
        const uint8_t* s = src + i * pb;
        int16_t* di = d + i * dw;
        if (J.in == InCode::U8) {
          for (int64_t c = 0; c < C; ++c) di[c] = int16_t(s[c]);
        } else if (J.in == InCode::S8) {
          for (int64_t c = 0; c < C; ++c) di[c] = int16_t(int8_t(s[c]));
        } else {
          decode_nibbles_i16(J, s, C, di);
        }
        for (int64_t c = C; c < dw; ++c) di[c] = 0;
      }
    }
    for (int64_t c = 0; c < dw; ++c) d[HW * dw + c] = 0;
    return;
  }
  uint8_t* d = reinterpret_cast<uint8_t*>(xbuf);
  const int64_t dw = 4 * cs;  // bytes per pixel
  // Signed inputs are stored as x + 128 (x ^ 0x80) and the zero pixel as 128: the products then carry
  // 128 * sum(w) too, which the caller subtracts (the padding channels have zero weights).
  const uint8_t flip = J.in == InCode::S8 ? 0x80 : 0x00;
  for (int64_t i = 0; i < HW; ++i) {
    const uint8_t* s = src + i * pb;
    uint8_t* di = d + i * dw;
    if (J.in == InCode::Int4) {
      for (int64_t c = 0; c < C; ++c) di[c] = uint8_t(J.levels[(s[c >> 1] >> ((c & 1) * 4)) & 15]);
    } else {
      for (int64_t c = 0; c < C; ++c) di[c] = uint8_t(s[c] ^ flip);
    }
    for (int64_t c = C; c < dw; ++c) di[c] = 0;
  }
  for (int64_t c = 0; c < dw; ++c) d[HW * dw + c] = flip;
}

template <class T>
static void int8_run(const Int8Job& J, int64_t t0, int64_t t1, Scratch& s) {
  const Geom& g = J.g;
  const int64_t taps = g.taps(), P = g.pixels(), HW = g.H * g.W;
  const int64_t cs = T::quads ? J.Cq4 : J.Cp2;
  const int32_t* w = T::quads ? J.w_quads : J.w_pairs;
  int32_t* xbuf = reinterpret_cast<int32_t*>(s.data);
  int32_t* acc = xbuf + (HW + 1) * cs;
  int32_t* offt = acc + T::np * J.Rpad;
  float* y = reinterpret_cast<float*>(offt + T::np * taps);
  const int64_t ppt = J.pixels_per_task, per_image = (P + ppt - 1) / ppt;
  const bool shifted = T::quads && J.in == InCode::S8;
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t n = task / per_image, pb = (task % per_image) * ppt, pe = epi_min(P, pb + ppt);
    if (s.cached_image != n) {
      int8_convert_image<T::quads>(J, n, xbuf, cs);
      s.cached_image = n;
    }
    for (int64_t p = pb; p < pe; p += T::np) {
      const int64_t np = epi_min(T::np, pe - p);
      for (int64_t j = 0; j < T::np; ++j) {  // a short tile repeats its last pixel (results unused)
        const int32_t* src = J.offsets + (p + epi_min(j, np - 1)) * taps;
        for (int64_t t = 0; t < taps; ++t) offt[j * taps + t] = src[t];
      }
      int8_row_blocks<T>(xbuf, cs, cs, offt, taps, w, J.Rpad, acc);
      if (shifted) {
        for (int64_t j = 0; j < np; ++j)
          for (int64_t r = 0; r < J.R; ++r) acc[j * J.Rpad + r] -= 128 * J.w_sum[r];
      }
      epi_pixels(J.epi, n, p, np, acc, J.Rpad, y);
    }
  }
}

// Few input channels (a network's first layer): taps and channels as one reduction (index t C + c) over
// per-pixel patches built for a block of pixels ahead of the tiles that read them (im2col of the block), so
// the register tile loops over ceil(taps C / 2) pairs instead of taps very short runs. Pairs path only.
template <class T>
static void int8_run_flat(const Int8Job& J, int64_t t0, int64_t t1, Scratch& s) {
  static_assert(!T::quads, "the small-C path runs on int16 pairs");
  constexpr int64_t kBlock = 96;  // pixels whose patches are built at once (a multiple of every np)
  const Geom& g = J.g;
  const int64_t taps = g.taps(), P = g.pixels(), HW = g.H * g.W, cs = J.Cp2, C = g.C;
  const int64_t cf = (taps * C + 1) / 2, pitch = 4 * ((taps * C + 3) / 4);  // int16 per row: whole words
  int32_t* xbuf = reinterpret_cast<int32_t*>(s.data);
  int32_t* acc = xbuf + (HW + 1) * cs;
  int16_t* patches = reinterpret_cast<int16_t*>(acc + T::np * J.Rpad);
  float* y = reinterpret_cast<float*>(patches + kBlock * pitch);
  int32_t ident[kBlock];
  for (int64_t j = 0; j < kBlock; ++j) ident[j] = int32_t(j);
  const int64_t ppt = J.pixels_per_task, per_image = (P + ppt - 1) / ppt;
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t n = task / per_image, pb = (task % per_image) * ppt, pe = epi_min(P, pb + ppt);
    if (s.cached_image != n) {
      int8_convert_image<false>(J, n, xbuf, cs);
      s.cached_image = n;
    }
    const int16_t* ximg = reinterpret_cast<const int16_t*>(xbuf);
    for (int64_t b0 = pb; b0 < pe; b0 += kBlock) {
      const int64_t nb = epi_min(kBlock, pe - b0);
      // Each patch row is assembled as 64-bit words in a register (tap t's C values at bit 16 C t) and
      // stored once per word: element-wise stores were several times slower here.
      const int64_t tap_bits = 16 * C;
      const uint64_t mask = tap_bits == 64 ? ~uint64_t(0) : ((uint64_t(1) << tap_bits) - 1);
      for (int64_t j = 0; j < nb; ++j) {
        uint64_t* row = reinterpret_cast<uint64_t*>(patches + j * pitch);
        const int32_t* off = J.offsets + (b0 + j) * taps;
        uint64_t cur = 0;
        int64_t used = 0, wi = 0;
        for (int64_t t = 0; t < taps; ++t) {
          const int16_t* src = ximg + int64_t(off[t]) * 2 * cs;
          uint64_t v;
          if (cs == 2) {  // fixed-size loads (a variable-size memcpy is a library call)
            __builtin_memcpy(&v, src, 8);
          } else {
            uint32_t v32;
            __builtin_memcpy(&v32, src, 4);
            v = v32;
          }
          v &= mask;
          cur |= v << used;
          used += tap_bits;
          if (used >= 64) {
            row[wi++] = cur;
            used -= 64;
            cur = used ? v >> (tap_bits - used) : 0;
          }
        }
        if (used) row[wi++] = cur;
        while (wi * 4 < pitch) row[wi++] = 0;
      }
      for (int64_t p = 0; p < nb; p += T::np) {
        const int64_t np = epi_min(T::np, nb - p);
        int32_t off[T::np];
        for (int64_t j = 0; j < T::np; ++j) off[j] = ident[p + epi_min(j, np - 1)];
        int8_row_blocks<T>(reinterpret_cast<const int32_t*>(patches), pitch / 2, cf, off, 1, J.w_flat, J.Rpad, acc);
        epi_pixels(J.epi, n, b0 + p, np, acc, J.Rpad, y);
      }
    }
  }
}
