#include "cpu/detail/exact_conv.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace cmn::cpu {

namespace {

constexpr int64_t kPixelBlock = 32;

// Rows [np][L] of the patches of pixels p0..p0+np of image n, taps outside the frame left as zeros.
template <typename T>
void im2col_block(const ConvGeom& g, const T* x_nhwc, int64_t n, int64_t p0, int64_t np, int64_t L, T* rows) {
  const int64_t C = g.C;
  for (int64_t j = 0; j < np; ++j) {
    const int64_t oy = (p0 + j) / g.WO, ox = (p0 + j) % g.WO;
    T* row = rows + j * L;
    for (int64_t ki = 0; ki < g.KH; ++ki)
      for (int64_t kj = 0; kj < g.KW; ++kj) {
        T* dst = row + (ki * g.KW + kj) * C;
        const int64_t iy = oy * g.SH - g.PH + ki * g.DH, ix = ox * g.SW - g.PW + kj * g.DW;
        if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) {
          std::fill(dst, dst + C, T(0));
        } else {
          const T* src = x_nhwc + ((n * g.H + iy) * g.W + ix) * C;
          std::copy(src, src + C, dst);
        }
      }
  }
}

template <typename T, typename Dot>
void run_blocks(const ConvGeom& g, const T* x_nhwc, int64_t R, const Epilogue& ep, const int64_t* row_of_channel,
                Dot dot) {
  const int64_t P = g.pixels(), L = conv_row_length(g);
  const int64_t blocks = ceil_div(P, kPixelBlock);
  at::parallel_for(0, g.N * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> patch(kPixelBlock * L, T(0));  // the tail [taps*C, L) stays zero
    std::vector<int32_t> acc(std::max<int64_t>(R, 1) * kPixelBlock, 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, p0 = (task % blocks) * kPixelBlock;
      const int64_t np = std::min(kPixelBlock, P - p0);
      if (R > 0) {
        im2col_block(g, x_nhwc, n, p0, np, L, patch.data());
        dot(patch.data(), np, L, acc.data());  // acc[r * np + j]
      }
      ep.write_block(n, p0, np, acc.data(), np, row_of_channel);
    }
  });
}

}  // namespace

void exact_conv_f32(const ConvGeom& g, const float* x_nhwc, const float* wrows, int64_t R, int64_t max_abs_product,
                    const Epilogue& ep, const int64_t* row_of_channel) {
  const int64_t flush = exact_flush_chunks(max_abs_product);
  run_blocks(g, x_nhwc, R, ep, row_of_channel, [&](const float* patch, int64_t np, int64_t L, int32_t* acc) {
    rowdot_f32_exact(wrows, R, patch, np, L, L, flush, acc, np, 1);
  });
}

void exact_conv_shift_add(const ConvGeom& g, const int32_t* x_nhwc, const uint8_t* wcodes, int64_t R,
                          const ShiftTable& table, const Epilogue& ep, const int64_t* row_of_channel) {
  run_blocks(g, x_nhwc, R, ep, row_of_channel, [&](const int32_t* patch, int64_t np, int64_t L, int32_t* acc) {
    rowdot_shift_add(patch, np, wcodes, R, L, table, acc, 1, np);
  });
}

}  // namespace cmn::cpu
