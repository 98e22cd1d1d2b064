// pack_bits / pack_int4 on CPU.
#include "common/checks.h"
#include "common/validate.h"
#include "ops.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>

namespace cmn {

namespace {
// Channels-last input: each pixel's C values are contiguous, so each output word is one pass over 32 of them.
template <typename scalar_t>
void pack_bits_nhwc(const scalar_t* xp, int64_t pixels, int64_t C, int64_t Cw, bool pm1, uint32_t* op) {
  const scalar_t zero(0), half(0.5);
  at::parallel_for(0, pixels, 256, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const scalar_t* v = xp + p * C;
      for (int64_t wd = 0; wd < Cw; ++wd) {
        uint32_t bits = 0;
        const int64_t c0 = wd * 32, n = std::min<int64_t>(32, C - c0);
        // Compare in the input's own dtype: a float64 like -1e-50 must pack as -1, not round to -0.0.
        if (pm1) {
          for (int64_t i = 0; i < n; ++i) bits |= uint32_t(v[c0 + i] < zero) << i;
        } else {
          for (int64_t i = 0; i < n; ++i) bits |= uint32_t(v[c0 + i] >= half) << i;
        }
        op[p * Cw + wd] = bits;
      }
    }
  });
}
}  // namespace

at::Tensor pack_bits_cpu(const at::Tensor& x_in, std::string_view encoding) {
  const auto enc = validate_pack_bits(x_in, encoding);
  const int64_t A = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3), Cw = ceil_div(C, 32);
  if (x_in.numel() > 0 && x_in.permute({0, 2, 3, 1}).is_contiguous()) {  // NHWC memory (channels_last)
    auto out = at::empty({A, H, W, Cw}, x_in.options().dtype(at::kInt));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_in.scalar_type(), "pack_bits_cpu", [&] {
      pack_bits_nhwc(x_in.data_ptr<scalar_t>(), A * H * W, C, Cw, enc == BitEncoding::PM1,
                     reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>()));
    });
    return out;
  }
  const auto x = x_in.contiguous();
  auto out = at::zeros({A, H, W, Cw}, x.options().dtype(at::kInt));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pack_bits_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    uint32_t* op = reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>());
    at::parallel_for(0, A * H, 1, [&](int64_t b, int64_t e) {
      for (int64_t ah = b; ah < e; ++ah) {
        const int64_t a = ah / H, h = ah % H;
        uint32_t* row = op + ah * W * Cw;  // [W][Cw]
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t* src = xp + ((a * C + c) * H + h) * W;
          const uint32_t bit = 1u << (c % 32);
          uint32_t* dst = row + c / 32;
          // Compare in the input's own dtype: a float64 like -1e-50 must pack as -1, not round to -0.0.
          const scalar_t zero(0), half(0.5);
          for (int64_t w = 0; w < W; ++w) {
            const bool set = enc == BitEncoding::PM1 ? (src[w] < zero) : (src[w] >= half);
            if (set) dst[w * Cw] |= bit;
          }
        }
      }
    });
  });
  return out;
}

at::Tensor pack_int4_cpu(const at::Tensor& codes_in) {
  validate_pack_int4(codes_in);
  const auto codes = codes_in.contiguous();
  const int64_t L = codes.size(-1), Lb = ceil_div(L, 2);
  const int64_t rows = L == 0 ? 0 : codes.numel() / L;
  auto shape = codes.sizes().vec();
  shape.back() = Lb;
  auto out = at::empty(shape, codes.options());
  const uint8_t* cp = codes.data_ptr<uint8_t>();
  uint8_t* op = out.data_ptr<uint8_t>();
  // Validate values first (before writing anything): a code above 15 is a caller bug, never silently masked.
  int64_t bad_at = -1;
  for (int64_t i = 0; i < codes.numel(); ++i)
    if (cp[i] > 15) {
      bad_at = i;
      break;
    }
  TORCH_CHECK_VALUE(bad_at < 0, "cmn::pack_int4: argument 'codes' expected values in 0..15, got ",
                    bad_at >= 0 ? int(cp[bad_at]) : 0, " at flat index ", bad_at);
  at::parallel_for(0, rows, 64, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const uint8_t* src = cp + r * L;
      uint8_t* dst = op + r * Lb;
      for (int64_t j = 0; j < L / 2; ++j) dst[j] = static_cast<uint8_t>(src[2 * j] | (src[2 * j + 1] << 4));
      if (L % 2) dst[Lb - 1] = src[L - 1];
    }
  });
  return out;
}

}  // namespace cmn
