// From the validated geometry (common/checks.h) to the kernels' ConvShape.
#pragma once

#include "common/checks.h"
#include "cuda/detail/igemm.cuh"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

namespace cmn::cuda {

inline ConvShape conv_shape(const ConvGeom& g, int64_t words_per_pixel) {
  return ConvShape{int(g.N), int(g.H), int(g.W), int(words_per_pixel), int(g.HO), int(g.WO), int(g.KH), int(g.KW),
                   int(g.SH), int(g.SW), int(g.PH), int(g.PW), int(g.DH), int(g.DW)};
}

inline unsigned grid_for(int64_t total, int threads = 256) {
  const int64_t b = (total + threads - 1) / threads;
  return unsigned(b < 65536 ? (b > 0 ? b : 1) : 65536);  // kernels use grid-stride loops
}

// A kernel-path override from the environment (benchmarks and tests pick paths this way): true for `first`,
// false for `second`, `fallback` when the variable is unset or empty; anything else is refused.
inline bool path_choice(const char* var, const char* first, const char* second, bool fallback) {
  const char* env = std::getenv(var);
  if (!env || !*env) return fallback;
  if (std::strcmp(env, first) == 0) return true;
  if (std::strcmp(env, second) == 0) return false;
  TORCH_CHECK_VALUE(false, var, ": expected \"", first, "\" or \"", second, "\", got \"", env, "\"");
}

}  // namespace cmn::cuda
