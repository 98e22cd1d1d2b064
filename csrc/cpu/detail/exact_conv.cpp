#include "cpu/detail/exact_conv.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace cmn::cpu {

namespace {
constexpr int64_t kPixelBlock = 32;

// Rows [np][L] of the patches of pixels p0..p0+np of image n, taps outside the frame left as zeros.
void im2col_block(const ConvGeom& g, const int32_t* x_nhwc, int64_t n, int64_t p0, int64_t np, int64_t L,
                  int32_t* rows) {
  const int64_t C = g.C;
  for (int64_t j = 0; j < np; ++j) {
    const int64_t oy = (p0 + j) / g.WO, ox = (p0 + j) % g.WO;
    int32_t* row = rows + j * L;
    for (int64_t ki = 0; ki < g.KH; ++ki)
      for (int64_t kj = 0; kj < g.KW; ++kj) {
        int32_t* dst = row + (ki * g.KW + kj) * C;
        const int64_t iy = oy * g.SH - g.PH + ki * g.DH, ix = ox * g.SW - g.PW + kj * g.DW;
        if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) {
          std::fill(dst, dst + C, 0);
        } else {
          const int32_t* src = x_nhwc + ((n * g.H + iy) * g.W + ix) * C;
          std::copy(src, src + C, dst);
        }
      }
  }
}
}  // namespace

void exact_conv_shift_add(const ConvGeom& g, const int32_t* x_nhwc, const uint8_t* wcodes, int64_t R,
                          const ShiftTable& table, const Epilogue& ep) {
  const int64_t P = g.pixels(), L = conv_row_length(g);
  const int64_t blocks = ceil_div(P, kPixelBlock);
  at::parallel_for(0, g.N * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> patch(kPixelBlock * L, 0);  // the tail [taps*C, L) stays zero
    std::vector<int32_t> acc(std::max<int64_t>(R, 1) * kPixelBlock, 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, p0 = (task % blocks) * kPixelBlock;
      const int64_t np = std::min(kPixelBlock, P - p0);
      im2col_block(g, x_nhwc, n, p0, np, L, patch.data());
      rowdot_shift_add(patch.data(), np, wcodes, R, L, table, acc.data(), R, 1);  // acc[pixel * R + filter]
      ep.write_pixels(n, p0, np, acc.data(), R);
    }
  });
}

}  // namespace cmn::cpu
