// The fused NHWC epilogue (see EpiView in job.h). Included inside an instruction-set namespace
// (cmn::cpu::<isa>), so every ISA translation unit gets its own copy, vectorised for its flags. Plain loops
// over the K channels of one pixel: the compiler vectorises them; with -ffp-contract=off every operation is
// rounded once, exactly as in the PyTorch reference (cmn_ext.ops.reference).

static inline uint32_t f32_bits(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  return u;
}

static inline float f32_from_bits(uint32_t u) {
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

// float -> IEEE half, round to nearest even, NaN kept as a quiet NaN (the algorithm PyTorch's c10::Half uses:
// the float unit does the rounding by adding a power of two that aligns the half's last mantissa bit).
static inline uint16_t f32_to_f16(float f) {
  const float scale_to_inf = f32_from_bits(0x77800000u);   // 2^112
  const float scale_to_zero = f32_from_bits(0x08800000u);  // 2^-110
  float base = (__builtin_fabsf(f) * scale_to_inf) * scale_to_zero;
  const uint32_t w = f32_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = f32_from_bits((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = f32_bits(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

static inline float f16_to_f32(uint16_t h) {
  const uint32_t w = uint32_t(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float exp_scale = f32_from_bits(0x07800000u);  // 2^-112
  const float normalized = f32_from_bits((two_w >> 4) + (0xE0u << 23)) * exp_scale;
  const float denormalized = f32_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t result = sign | (two_w < (1u << 27) ? f32_bits(denormalized) : f32_bits(normalized));
  return f32_from_bits(result);
}

// float -> bfloat16, round to nearest even (c10::BFloat16's rule), NaN -> quiet NaN.
static inline uint16_t f32_to_bf16(float f) {
  const uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float bf16_to_f32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }

static inline int64_t epi_min(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t epi_max(int64_t a, int64_t b) { return a > b ? a : b; }

// y[k] += residual channel (k - offset) for k in [k0, k1).
static inline void add_residual(const EpiView& e, int64_t n, int64_t p, float* y) {
  const int64_t oy = p / e.WO, ox = p - oy * e.WO;
  const int64_t base = ((n * e.res_h + oy * e.res_stride) * e.res_w + ox * e.res_stride) * e.res_c;
  const int64_t k0 = epi_max(0, e.res_offset), k1 = epi_min(e.K, e.res_offset + e.res_c);
  const int64_t shift = base - e.res_offset;
  switch (e.res_kind) {
    case ResCode::F32: {
      const float* r = static_cast<const float*>(e.res) + shift;
      for (int64_t k = k0; k < k1; ++k) y[k] = y[k] + r[k];
      break;
    }
    case ResCode::F16: {
      const uint16_t* r = static_cast<const uint16_t*>(e.res) + shift;
      for (int64_t k = k0; k < k1; ++k) y[k] = y[k] + f16_to_f32(r[k]);
      break;
    }
    case ResCode::BF16: {
      const uint16_t* r = static_cast<const uint16_t*>(e.res) + shift;
      for (int64_t k = k0; k < k1; ++k) y[k] = y[k] + bf16_to_f32(r[k]);
      break;
    }
    case ResCode::S8: {
      const int8_t* r = static_cast<const int8_t*>(e.res) + shift;
      const float s = e.res_scale;
      for (int64_t k = k0; k < k1; ++k) y[k] = y[k] + float(r[k]) * s;
      break;
    }
    case ResCode::U8: {
      const uint8_t* r = static_cast<const uint8_t*>(e.res) + shift;
      const float s = e.res_scale;
      for (int64_t k = k0; k < k1; ++k) y[k] = y[k] + float(r[k]) * s;
      break;
    }
    case ResCode::None:
      break;
  }
}

template <typename Q>
static inline void quantize_values(const EpiView& e, const float* y, Q* out) {
  const float step = e.out_scale, lo = float(e.qmin), hi = float(e.qmax);
  if (e.round_half_up) {
    for (int64_t k = 0; k < e.K; ++k) {
      float q = __builtin_floorf(y[k] / step + 0.5f);
      q = q < lo ? lo : q;
      q = q > hi ? hi : q;
      out[k] = static_cast<Q>(q == q ? q : lo);
    }
  } else {
    for (int64_t k = 0; k < e.K; ++k) {
      float q = __builtin_nearbyintf(y[k] / step);
      q = q < lo ? lo : q;
      q = q > hi ? hi : q;
      out[k] = static_cast<Q>(q == q ? q : lo);
    }
  }
}

#if defined(__AVX2__)
// The common cases in registers, eight channels at a time: no channel map, K a multiple of 8, a float32
// residual whose channel window is 8-aligned (or none). Same operations in the same order as the loops below.
static bool epi_fast_ok(const EpiView& e) {
  if (e.K % 8 || e.kind == OutCode::Int || e.kind == OutCode::F16 || e.kind == OutCode::BF16) return false;
  if (e.res_kind == ResCode::None) return true;
  return e.res_kind == ResCode::F32 && e.res_offset % 8 == 0 && e.res_c % 8 == 0;
}

// One output kind per instantiation, every field of the view hoisted into locals (stores to the output must
// not make the compiler reload them).
template <OutCode KIND, bool RES>
static void epi_fast(const EpiView& e, int64_t n, int64_t p0, int64_t np, const int32_t* acc, int64_t ld) {
  const int64_t K = e.K, P = e.P, WO = e.WO;
  const float* scale = e.scale;
  const float* bias = e.bias;
  const bool relu = e.relu, half_up = e.round_half_up, pm1 = e.bits_pm1;
  float* float_out = e.float_out;
  void* out = e.out;
  const __m256 zero = _mm256_setzero_ps(), half = _mm256_set1_ps(0.5f), step = _mm256_set1_ps(e.out_scale);
  const __m256 lo = _mm256_set1_ps(float(e.qmin)), hi = _mm256_set1_ps(float(e.qmax));
  const int32_t n_thr = e.n_thresholds;
  __m256 thr[15];
  for (int32_t t = 0; t < n_thr; ++t) thr[t] = _mm256_set1_ps(e.thresholds[t]);
  const int64_t k0 = epi_max(0, e.res_offset), k1 = epi_min(K, e.res_offset + e.res_c);
  const float* res = static_cast<const float*>(e.res);
  const int64_t res_h = e.res_h, res_w = e.res_w, res_c = e.res_c, res_stride = e.res_stride, res_offset = e.res_offset;
  for (int64_t j = 0; j < np; ++j) {
    const int32_t* a = acc + j * ld;
    const int64_t p = p0 + j, o = n * P + p;
    const float* r = nullptr;
    if (RES) {
      const int64_t oy = p / WO, ox = p - oy * WO;
      r = res + ((n * res_h + oy * res_stride) * res_w + ox * res_stride) * res_c - res_offset;
    }
    uint32_t bits = 0;
    for (int64_t k = 0; k < K; k += 8) {
      __m256 y = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + k)));
      if (scale) y = _mm256_mul_ps(y, _mm256_loadu_ps(scale + k));
      if (bias) y = _mm256_add_ps(y, _mm256_loadu_ps(bias + k));
      if (RES && k >= k0 && k < k1) y = _mm256_add_ps(y, _mm256_loadu_ps(r + k));
      if (relu) y = _mm256_blendv_ps(y, zero, _mm256_cmp_ps(y, zero, _CMP_LT_OQ));
      if (float_out) _mm256_storeu_ps(float_out + o * K + k, y);
      if constexpr (KIND == OutCode::F32) {
        _mm256_storeu_ps(static_cast<float*>(out) + o * K + k, y);
      } else if constexpr (KIND == OutCode::S8 || KIND == OutCode::U8) {
        __m256 q = _mm256_div_ps(y, step);
        q = half_up ? _mm256_floor_ps(_mm256_add_ps(q, half))
                    : _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm256_blendv_ps(q, lo, _mm256_cmp_ps(q, lo, _CMP_LT_OQ));
        q = _mm256_blendv_ps(q, hi, _mm256_cmp_ps(q, hi, _CMP_GT_OQ));
        q = _mm256_blendv_ps(lo, q, _mm256_cmp_ps(q, q, _CMP_ORD_Q));  // NaN -> lo
        const __m256i qi = _mm256_cvtps_epi32(q);                       // exact: integral values
        const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
        const __m128i b8 = KIND == OutCode::U8 ? _mm_packus_epi16(w16, w16) : _mm_packs_epi16(w16, w16);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(out) + o * K + k), b8);
      } else if constexpr (KIND == OutCode::Bits) {
        const __m256 m = pm1 ? _mm256_cmp_ps(y, zero, _CMP_LT_OQ) : _mm256_cmp_ps(y, half, _CMP_GE_OQ);
        bits |= uint32_t(_mm256_movemask_ps(m)) << (k & 31);
        if ((k & 31) == 24 || k + 8 == K) {
          static_cast<uint32_t*>(out)[o * ((K + 31) / 32) + (k >> 5)] = bits;
          bits = 0;
        }
      } else if constexpr (KIND == OutCode::Int4) {
        const __m256 u = _mm256_div_ps(y, step);
        __m256i code = _mm256_setzero_si256();
        for (int32_t t = 0; t < n_thr; ++t)  // a true compare is -1: subtracting it counts
          code = _mm256_sub_epi32(code, _mm256_castps_si256(_mm256_cmp_ps(thr[t], u, _CMP_LE_OQ)));
        // pairs of channels into bytes: code[2i] | code[2i + 1] << 4
        const __m256i packed = _mm256_or_si256(code, _mm256_srli_epi64(code, 28));
        const __m256i sel = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
        const __m128i b32 = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(packed, sel));
        const __m128i w16 = _mm_packus_epi32(b32, b32);
        const __m128i b8 = _mm_packus_epi16(w16, w16);
        const uint32_t four = uint32_t(_mm_cvtsi128_si32(b8));
        __builtin_memcpy(static_cast<uint8_t*>(out) + o * (K / 2) + k / 2, &four, 4);
      }
    }
  }
}

template <OutCode KIND>
static void epi_fast_res(const EpiView& e, int64_t n, int64_t p0, int64_t np, const int32_t* acc, int64_t ld) {
  if (e.res_kind == ResCode::F32) epi_fast<KIND, true>(e, n, p0, np, acc, ld);
  else epi_fast<KIND, false>(e, n, p0, np, acc, ld);
}

static void epi_pixels_fast(const EpiView& e, int64_t n, int64_t p0, int64_t np, const int32_t* acc, int64_t ld) {
  switch (e.kind) {
    case OutCode::F32: return epi_fast_res<OutCode::F32>(e, n, p0, np, acc, ld);
    case OutCode::S8: return epi_fast_res<OutCode::S8>(e, n, p0, np, acc, ld);
    case OutCode::U8: return epi_fast_res<OutCode::U8>(e, n, p0, np, acc, ld);
    case OutCode::Bits: return epi_fast_res<OutCode::Bits>(e, n, p0, np, acc, ld);
    case OutCode::Int4: return epi_fast_res<OutCode::Int4>(e, n, p0, np, acc, ld);
    default: return;
  }
}
#endif

// Writes pixels [p0, p0 + np) of image n. acc[j * ld + r] is the accumulator of row r at pixel p0 + j.
// y: scratch of K floats.
static void epi_pixels(const EpiView& e, int64_t n, int64_t p0, int64_t np, const int32_t* acc, int64_t ld,
                       float* y) {
#if defined(__AVX2__)
  if (epi_fast_ok(e)) {
    if (!e.row_of_channel) return epi_pixels_fast(e, n, p0, np, acc, ld);
    int32_t* full = reinterpret_cast<int32_t*>(y);  // a pixel's K accumulators, pruned channels 0
    for (int64_t j = 0; j < np; ++j) {
      const int32_t* a = acc + j * ld;
      for (int64_t k = 0; k < e.K; ++k) full[k] = e.row_of_channel[k] >= 0 ? a[e.row_of_channel[k]] : 0;
      epi_pixels_fast(e, n, p0 + j, 1, full, e.K);
    }
    return;
  }
#endif
  const int64_t K = e.K;
  const int32_t* map = e.row_of_channel;
  for (int64_t j = 0; j < np; ++j) {
    const int32_t* a = acc + j * ld;
    const int64_t o = n * e.P + p0 + j;  // output pixel (NHWC row)
    if (e.kind == OutCode::Int) {
      int32_t* out = static_cast<int32_t*>(e.out) + o * K;
      if (map) {
        for (int64_t k = 0; k < K; ++k) out[k] = map[k] >= 0 ? a[map[k]] : 0;
      } else {
        for (int64_t k = 0; k < K; ++k) out[k] = a[k];
      }
      continue;
    }
    if (map) {
      for (int64_t k = 0; k < K; ++k) y[k] = float(map[k] >= 0 ? a[map[k]] : 0);
    } else {
      for (int64_t k = 0; k < K; ++k) y[k] = float(a[k]);
    }
    if (e.scale)
      for (int64_t k = 0; k < K; ++k) y[k] = y[k] * e.scale[k];
    if (e.bias)
      for (int64_t k = 0; k < K; ++k) y[k] = y[k] + e.bias[k];
    if (e.res_kind != ResCode::None) add_residual(e, n, p0 + j, y);
    if (e.relu)
      for (int64_t k = 0; k < K; ++k) y[k] = y[k] < 0.f ? 0.f : y[k];
    if (e.float_out) __builtin_memcpy(e.float_out + o * K, y, sizeof(float) * K);
    switch (e.kind) {
      case OutCode::F32:
        __builtin_memcpy(static_cast<float*>(e.out) + o * K, y, sizeof(float) * K);
        break;
      case OutCode::F16: {
        uint16_t* out = static_cast<uint16_t*>(e.out) + o * K;
        for (int64_t k = 0; k < K; ++k) out[k] = f32_to_f16(y[k]);
        break;
      }
      case OutCode::BF16: {
        uint16_t* out = static_cast<uint16_t*>(e.out) + o * K;
        for (int64_t k = 0; k < K; ++k) out[k] = f32_to_bf16(y[k]);
        break;
      }
      case OutCode::S8:
        quantize_values(e, y, static_cast<int8_t*>(e.out) + o * K);
        break;
      case OutCode::U8:
        quantize_values(e, y, static_cast<uint8_t*>(e.out) + o * K);
        break;
      case OutCode::Bits: {
        const int64_t words = (K + 31) / 32;
        uint32_t* out = static_cast<uint32_t*>(e.out) + o * words;
        for (int64_t wd = 0; wd < words; ++wd) {
          uint32_t bits = 0;
          const int64_t kb = wd * 32, ke = epi_min(K, kb + 32);
          if (e.bits_pm1) {
            for (int64_t k = kb; k < ke; ++k) bits |= uint32_t(y[k] < 0.f) << (k - kb);
          } else {
            for (int64_t k = kb; k < ke; ++k) bits |= uint32_t(y[k] >= 0.5f) << (k - kb);
          }
          out[wd] = bits;
        }
        break;
      }
      case OutCode::Int4: {
        const int64_t bytes = (K + 1) / 2;
        uint8_t* out = static_cast<uint8_t*>(e.out) + o * bytes;
        const float step = e.out_scale;
        for (int64_t k = 0; k < K; ++k) {
          const float u = y[k] / step;
          int32_t code = 0;
          for (int32_t t = 0; t < e.n_thresholds; ++t) code += e.thresholds[t] <= u;
          y[k] = float(code);  // reuse y as the code buffer
        }
        for (int64_t b = 0; b < bytes; ++b) {
          const uint32_t lo = uint32_t(y[2 * b]);
          const uint32_t hi = 2 * b + 1 < K ? uint32_t(y[2 * b + 1]) : 0u;
          out[b] = static_cast<uint8_t>(lo | (hi << 4));
        }
        break;
      }
      case OutCode::Int:
        break;
    }
  }
}
