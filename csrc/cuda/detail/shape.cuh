// From the validated geometry (common/checks.h) to the kernels' ConvShape.
#pragma once

#include "common/checks.h"
#include "cuda/detail/igemm.cuh"

namespace cmn::cuda {

inline ConvShape conv_shape(const ConvGeom& g, int64_t words_per_pixel) {
  return ConvShape{int(g.N), int(g.H), int(g.W), int(words_per_pixel), int(g.HO), int(g.WO), int(g.KH), int(g.KW),
                   int(g.SH), int(g.SW), int(g.PH), int(g.PW), int(g.DH), int(g.DW)};
}

inline unsigned grid_for(int64_t total, int threads = 256) {
  const int64_t b = (total + threads - 1) / threads;
  return unsigned(b < 65536 ? (b > 0 ? b : 1) : 65536);  // kernels use grid-stride loops
}

}  // namespace cmn::cuda
