// Binary convolution on CPU: bit im2col per block of output pixels, then XOR/AND + popcount row dots
// (AVX2 vpshufb popcount) against the packed filters, then the fused epilogue.
//   pm1: dot = n_valid - 2 * popc(a XOR w) over in-frame taps only. Out-of-frame taps are stored as zero
//        words, whose XOR with w counts popc(w) spuriously; that count is subtracted per filter and tap.
//   01 : dot = popc(a) - 2 * popc(a AND w)   (w bit 1 means -1, so popc(a AND ~w) - popc(a AND w)).
#include "common/epilogue.h"
#include "common/validate.h"
#include "cpu/detail/rowdot.h"
#include "ops.h"

#include <ATen/Parallel.h>

#include <vector>

namespace cmn {

namespace {
constexpr int64_t kPixelBlock = 48;
}

at::Tensor binary_conv2d_cpu(const at::Tensor& x_bits, const at::Tensor& w_bits, int64_t in_channels,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                             std::string_view encoding, const EpilogueArgs& epi) {
  const auto plan = validate_binary_conv2d(x_bits, w_bits, in_channels, stride, padding, dilation, encoding);
  const auto& g = plan.g;
  auto ep = Epilogue::make("cmn::binary_conv2d", epi, g.N, g.K, {g.HO, g.WO}, x_bits.options(), plan.enc);
  if (g.N == 0 || g.K == 0) return ep.out;

  const auto x = x_bits.contiguous();
  const auto w = w_bits.contiguous();
  const int64_t C = g.C, Cw = ceil_div(C, 32), T = g.taps(), P = g.pixels();
  const int64_t L32 = round_up(T * Cw, 8);
  const uint32_t tail = (C % 32) ? ((1u << (C % 32)) - 1u) : ~0u;
  const bool pm1 = plan.enc == BitEncoding::PM1;

  // Filters as rows of L32 words (tap-major, tail bits cleared) in nibble planes, and per-tap popcounts.
  std::vector<uint32_t> wrows(g.K * 2 * L32, 0u);
  std::vector<int32_t> wpc(g.K * T, 0);
  const uint32_t* wp = reinterpret_cast<const uint32_t*>(w.data_ptr<int32_t>());
  {
    std::vector<uint32_t> row(L32, 0u);
    for (int64_t k = 0; k < g.K; ++k) {
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t c = 0; c < Cw; ++c) {
          uint32_t v = wp[(k * T + t) * Cw + c];
          row[t * Cw + c] = (c == Cw - 1) ? (v & tail) : v;
        }
        wpc[k * T + t] = static_cast<int32_t>(cpu::popcount_words(row.data() + t * Cw, Cw));
      }
      cpu::to_nibble_planes(row.data(), L32, wrows.data() + k * 2 * L32);
    }
  }

  const uint32_t* xp = reinterpret_cast<const uint32_t*>(x.data_ptr<int32_t>());
  const int64_t blocks = ceil_div(P, kPixelBlock);
  at::parallel_for(0, g.N * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> row(L32, 0u);  // the tail [T*Cw, L32) stays zero
    std::vector<uint32_t> patch(kPixelBlock * 2 * L32, 0u);
    std::vector<int32_t> acc(g.K * kPixelBlock);
    std::vector<int32_t> apc(kPixelBlock), nvalid(kPixelBlock);
    std::vector<uint8_t> invalid(kPixelBlock * T);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, p0 = (task % blocks) * kPixelBlock;
      const int64_t np = std::min(kPixelBlock, P - p0);
      for (int64_t j = 0; j < np; ++j) {
        const int64_t oy = (p0 + j) / g.WO, ox = (p0 + j) % g.WO;
        int32_t valid = 0;
        for (int64_t ki = 0; ki < g.KH; ++ki)
          for (int64_t kj = 0; kj < g.KW; ++kj) {
            const int64_t t = ki * g.KW + kj;
            const int64_t iy = oy * g.SH - g.PH + ki * g.DH, ix = ox * g.SW - g.PW + kj * g.DW;
            uint32_t* dst = row.data() + t * Cw;
            const bool inside = iy >= 0 && iy < g.H && ix >= 0 && ix < g.W;
            invalid[j * T + t] = !inside;
            if (!inside) {
              std::fill(dst, dst + Cw, 0u);
              continue;
            }
            ++valid;
            const uint32_t* src = xp + ((n * g.H + iy) * g.W + ix) * Cw;
            std::copy(src, src + Cw, dst);
            dst[Cw - 1] &= tail;
          }
        nvalid[j] = valid;
        if (!pm1) apc[j] = static_cast<int32_t>(cpu::popcount_words(row.data(), T * Cw));
        cpu::to_nibble_planes(row.data(), L32, patch.data() + j * 2 * L32);
      }
      cpu::rowdot_bits(wrows.data(), g.K, patch.data(), np, L32, /*use_and=*/!pm1, acc.data(), np, 1);
      for (int64_t j = 0; j < np; ++j) {
        if (!pm1) {
          for (int64_t k = 0; k < g.K; ++k) acc[k * np + j] = apc[j] - 2 * acc[k * np + j];
        } else if (nvalid[j] == T) {
          const int32_t n_all = static_cast<int32_t>(T * C);
          for (int64_t k = 0; k < g.K; ++k) acc[k * np + j] = n_all - 2 * acc[k * np + j];
        } else {
          const int32_t n_valid = static_cast<int32_t>(nvalid[j] * C);
          const uint8_t* inv = invalid.data() + j * T;
          for (int64_t k = 0; k < g.K; ++k) {
            int32_t spurious = 0;
            for (int64_t t = 0; t < T; ++t)
              if (inv[t]) spurious += wpc[k * T + t];
            acc[k * np + j] = n_valid - 2 * (acc[k * np + j] - spurious);
          }
        }
      }
      ep.write_block(n, p0, np, acc.data(), np, nullptr);
    }
  });
  return ep.out;
}

}  // namespace cmn
