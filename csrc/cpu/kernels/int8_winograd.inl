// Exact integer Winograd F(2x2, 3x3) for 3x3, stride-1, dilation-1 int8 / APoT convolutions on the pairs
// (vpmaddwd) path. Included after int8_direct.inl (it reuses its tile kernel and image conversion).
//
// With B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G' = 2 G = [2 0 0; 1 1 1; 1 -1 1; 0 0 2] and
// A^T = [1 1 1 0; 0 1 -1 -1], a 2x2 output tile of one channel is
//     Y = A^T [ sum_c (G' g_c G'^T) . (B^T d_c B) ] A / 4
// where every quantity is an integer: the input transform only adds (|V| <= 4 max|x|, int16), the filter
// transform is integer thanks to the factor 2 per dimension (|U| <= 9 max|w|, int16, prepared once in
// cpu/prepack.cpp), the 16 products per tile are exact int32 sums (vpmaddwd), the output transform only
// adds, and the true result times 4 divides exactly. 16 multiplies per output tile and channel pair instead
// of 36: 2.25x fewer. dispatch.cpp checks that no int32 sum can overflow before choosing this path.

// V[xi][tile][channel] (int16, 2 * cs per tile) of a group of `tiles` tiles of a zero-bordered image of
// row pitch Wp pixels; ys / xs: each patch's top-left corner in that image.
static void wino_input_transform(const int16_t* ximg, int64_t Wp, int64_t cs, const int64_t* ys, const int64_t* xs,
                                 int64_t tiles, int16_t* V) {
  const int64_t dw = 2 * cs;
  for (int64_t j = 0; j < tiles; ++j) {
    const int16_t* px[4][4];
    for (int64_t a = 0; a < 4; ++a)
      for (int64_t b = 0; b < 4; ++b) px[a][b] = ximg + ((ys[j] + a) * Wp + xs[j] + b) * dw;
    int16_t* v = V + j * dw;
    const int64_t xi_stride = tiles * dw;
    int64_t c = 0;
#if defined(__AVX2__)
    for (; c + 16 <= dw; c += 16) {  // sixteen channels per register
      __m256i t[4][4];
      for (int b = 0; b < 4; ++b) {  // B^T d, per column
        const __m256i d0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(px[0][b] + c));
        const __m256i d1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(px[1][b] + c));
        const __m256i d2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(px[2][b] + c));
        const __m256i d3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(px[3][b] + c));
        t[0][b] = _mm256_sub_epi16(d0, d2);
        t[1][b] = _mm256_add_epi16(d1, d2);
        t[2][b] = _mm256_sub_epi16(d2, d1);
        t[3][b] = _mm256_sub_epi16(d1, d3);
      }
      for (int a = 0; a < 4; ++a) {  // (B^T d) B, per row
        int16_t* row = v + (4 * a) * xi_stride + c;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(row), _mm256_sub_epi16(t[a][0], t[a][2]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + xi_stride), _mm256_add_epi16(t[a][1], t[a][2]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + 2 * xi_stride), _mm256_sub_epi16(t[a][2], t[a][1]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + 3 * xi_stride), _mm256_sub_epi16(t[a][1], t[a][3]));
      }
    }
    for (; c + 8 <= dw; c += 8) {  // eight channels per 128-bit register
      __m128i t[4][4];
      for (int b = 0; b < 4; ++b) {
        const __m128i d0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(px[0][b] + c));
        const __m128i d1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(px[1][b] + c));
        const __m128i d2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(px[2][b] + c));
        const __m128i d3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(px[3][b] + c));
        t[0][b] = _mm_sub_epi16(d0, d2);
        t[1][b] = _mm_add_epi16(d1, d2);
        t[2][b] = _mm_sub_epi16(d2, d1);
        t[3][b] = _mm_sub_epi16(d1, d3);
      }
      for (int a = 0; a < 4; ++a) {
        int16_t* row = v + (4 * a) * xi_stride + c;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(row), _mm_sub_epi16(t[a][0], t[a][2]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(row + xi_stride), _mm_add_epi16(t[a][1], t[a][2]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(row + 2 * xi_stride), _mm_sub_epi16(t[a][2], t[a][1]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(row + 3 * xi_stride), _mm_sub_epi16(t[a][1], t[a][3]));
      }
    }
#endif
    for (; c < dw; ++c) {
      int16_t t[4][4];
      for (int64_t b = 0; b < 4; ++b) {  // B^T d, per column
        const int16_t d0 = px[0][b][c], d1 = px[1][b][c], d2 = px[2][b][c], d3 = px[3][b][c];
        t[0][b] = int16_t(d0 - d2);
        t[1][b] = int16_t(d1 + d2);
        t[2][b] = int16_t(d2 - d1);
        t[3][b] = int16_t(d1 - d3);
      }
      for (int64_t a = 0; a < 4; ++a) {  // (B^T d) B, per row
        int16_t* row = v + (4 * a) * xi_stride + c;
        row[0] = int16_t(t[a][0] - t[a][2]);
        row[xi_stride] = int16_t(t[a][1] + t[a][2]);
        row[2 * xi_stride] = int16_t(t[a][2] - t[a][1]);
        row[3 * xi_stride] = int16_t(t[a][1] - t[a][3]);
      }
    }
  }
}

// Y = A^T M A / 4 for one tile: M[xi][r] (16 x Rpad int32, stride xi_stride) -> out[dy][dx][r] rows.
static void wino_output_transform(const int32_t* M, int64_t xi_stride, int64_t rpad, int32_t* y00, int32_t* y01,
                                  int32_t* y10, int32_t* y11) {
  int64_t r = 0;
#if defined(__AVX2__)
  for (; r + 8 <= rpad; r += 8) {  // eight channels per register
    __m256i s0[4], s1[4];
    for (int b = 0; b < 4; ++b) {
      const __m256i m0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(M + b * xi_stride + r));
      const __m256i m1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(M + (4 + b) * xi_stride + r));
      const __m256i m2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(M + (8 + b) * xi_stride + r));
      const __m256i m3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(M + (12 + b) * xi_stride + r));
      s0[b] = _mm256_add_epi32(_mm256_add_epi32(m0, m1), m2);
      s1[b] = _mm256_sub_epi32(_mm256_sub_epi32(m1, m2), m3);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y00 + r),
                        _mm256_srai_epi32(_mm256_add_epi32(_mm256_add_epi32(s0[0], s0[1]), s0[2]), 2));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y01 + r),
                        _mm256_srai_epi32(_mm256_sub_epi32(_mm256_sub_epi32(s0[1], s0[2]), s0[3]), 2));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y10 + r),
                        _mm256_srai_epi32(_mm256_add_epi32(_mm256_add_epi32(s1[0], s1[1]), s1[2]), 2));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y11 + r),
                        _mm256_srai_epi32(_mm256_sub_epi32(_mm256_sub_epi32(s1[1], s1[2]), s1[3]), 2));
  }
#endif
  for (; r < rpad; ++r) {
    int32_t m[4][4];
    for (int64_t a = 0; a < 4; ++a)
      for (int64_t b = 0; b < 4; ++b) m[a][b] = M[(4 * a + b) * xi_stride + r];
    int32_t s0[4], s1[4];
    for (int64_t b = 0; b < 4; ++b) {
      s0[b] = m[0][b] + m[1][b] + m[2][b];
      s1[b] = m[1][b] - m[2][b] - m[3][b];
    }
    y00[r] = (s0[0] + s0[1] + s0[2]) >> 2;  // exact: a multiple of 4
    y01[r] = (s0[1] - s0[2] - s0[3]) >> 2;
    y10[r] = (s1[0] + s1[1] + s1[2]) >> 2;
    y11[r] = (s1[1] - s1[2] - s1[3]) >> 2;
  }
}

// The image as int16 pairs in a buffer with a zero border of PH (PW) pixels on top (left) and PH + 1 (PW + 1)
// at the bottom (right), so that every 4x4 patch of every output tile is in the buffer (no bounds checks).
// The border is never written: the scratch starts zeroed.
static void wino_convert_image(const Int8Job& J, int64_t n, int16_t* buf, int64_t Wp, int64_t cs) {
  const int64_t H = J.g.H, W = J.g.W, C = J.g.C, pb = J.x_pixel_bytes, dw = 2 * cs;
  for (int64_t iy = 0; iy < H; ++iy) {
    const uint8_t* src = J.x + ((n * H + iy) * W) * pb;
    int16_t* d = buf + ((iy + J.g.PH) * Wp + J.g.PW) * dw;
    if (J.in != InCode::Int4 && C == dw) {
      if (J.in == InCode::U8) {
        for (int64_t i = 0; i < W * C; ++i) d[i] = int16_t(src[i]);
      } else {
        const int8_t* s8 = reinterpret_cast<const int8_t*>(src);
        for (int64_t i = 0; i < W * C; ++i) d[i] = int16_t(s8[i]);
      }
      continue;
    }
    for (int64_t ix = 0; ix < W; ++ix) {
      const uint8_t* s = src + ix * pb;
      int16_t* di = d + ix * dw;
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
}

// Groups of T::np tiles along a tile row go through the register tile of int8_direct.inl (one tile = one
// "pixel", one "tap" per xi). Scratch: bordered image (int16 pairs) | V [16][np][2 cs] int16 |
// M [16][np][Rpad] int32 | two output rows [2][2 np][Rpad] int32 | y [K] float. Tasks: (image, tile rows).
template <class T>
static void int8_wino_run(const Int8Job& J, int64_t t0, int64_t t1, Scratch& s) {
  static_assert(!T::quads, "the Winograd path runs on int16 pairs");
  constexpr int64_t kWinoTiles = T::np;
  const Geom& g = J.g;
  const int64_t cs = J.Cp2, rpad = J.Rpad;
  const int64_t tiles_y = (g.HO + 1) / 2, tiles_x = (g.WO + 1) / 2;
  const int64_t Hp = g.H + 2 * g.PH + 2, Wp = g.W + 2 * g.PW + 2;
  int32_t* xbuf = reinterpret_cast<int32_t*>(s.data);
  int16_t* V = reinterpret_cast<int16_t*>(xbuf + Hp * Wp * cs);
  int32_t* M = reinterpret_cast<int32_t*>(V + 16 * kWinoTiles * 2 * cs);
  int32_t* rows = M + 16 * kWinoTiles * rpad;
  float* y = reinterpret_cast<float*>(rows + 2 * 2 * kWinoTiles * rpad);
  int32_t ident[kWinoTiles];
  for (int64_t j = 0; j < kWinoTiles; ++j) ident[j] = int32_t(j);
  const int64_t per_image = (tiles_y + J.wino_rows_per_task - 1) / J.wino_rows_per_task;
  const int64_t m_stride = kWinoTiles * rpad;   // between xi in M
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t n = task / per_image, ty0 = (task % per_image) * J.wino_rows_per_task;
    const int64_t ty1 = epi_min(tiles_y, ty0 + J.wino_rows_per_task);
    if (s.cached_image != n) {
      wino_convert_image(J, n, reinterpret_cast<int16_t*>(xbuf), Wp, cs);
      s.cached_image = n;
    }
    const int16_t* ximg = reinterpret_cast<const int16_t*>(xbuf);
    for (int64_t ty = ty0; ty < ty1; ++ty) {
      for (int64_t tx0 = 0; tx0 < tiles_x; tx0 += kWinoTiles) {
        const int64_t nt = epi_min(kWinoTiles, tiles_x - tx0);
        int64_t ys[kWinoTiles], xs[kWinoTiles];
        for (int64_t j = 0; j < kWinoTiles; ++j) {  // a short group repeats its last tile (results unused)
          ys[j] = 2 * ty;  // in the bordered image: output pixel (oy, ox) reads rows oy.., columns ox..
          xs[j] = 2 * (tx0 + epi_min(j, nt - 1));
        }
        wino_input_transform(ximg, Wp, cs, ys, xs, kWinoTiles, V);
        for (int64_t xi = 0; xi < 16; ++xi) {
          const int32_t* vx = reinterpret_cast<const int32_t*>(V + xi * kWinoTiles * 2 * cs);
          const int32_t* ux = J.w_wino + xi * cs * rpad;
          int32_t* mx = M + xi * m_stride;
          int8_row_blocks<T>(vx, cs, cs, ident, 1, ux, rpad, mx);
        }
        int32_t* row0 = rows;
        int32_t* row1 = rows + 2 * kWinoTiles * rpad;
        for (int64_t j = 0; j < nt; ++j)
          wino_output_transform(M + j * rpad, m_stride, rpad, row0 + (2 * j) * rpad, row0 + (2 * j + 1) * rpad,
                                row1 + (2 * j) * rpad, row1 + (2 * j + 1) * rpad);
        const int64_t x0 = 2 * tx0, np = epi_min(2 * nt, g.WO - x0);
        epi_pixels(J.epi, n, (2 * ty) * g.WO + x0, np, row0, rpad, y);
        if (2 * ty + 1 < g.HO) epi_pixels(J.epi, n, (2 * ty + 1) * g.WO + x0, np, row1, rpad, y);
      }
    }
  }
}
