// The fused epilogue on CUDA (same arithmetic as csrc/common/epilogue.h): reads GEMM accumulators
// acc [N, R, P] (cuda/detail/igemm.cuh: image, computed filter, pixel), maps output channel k to its column
// (row_of_channel; -1 = pruned, acc 0), applies an optional binary-conv correction, then scale, bias, the
// residual, ReLU, the optional float_out copy and the output conversion into the NHWC tensor Epilogue::make
// allocated. No host synchronisation: every table is a kernel argument or already on the device.
#pragma once

#include "common/epilogue.h"
#include "cuda/detail/igemm.cuh"

#include <ATen/core/Tensor.h>

namespace cmn::cuda {

// Corrections that turn an AND-popcount accumulator into the +-1 / 0-1 dot product (binary conv).
struct BinaryFix {
  enum Mode { None, PM1, Zero1 } mode = None;
  const int32_t* row_xpop = nullptr;    // [rows] popc of x over the valid taps
  const int32_t* row_nvalid = nullptr;  // [rows] valid taps
  const int32_t* w_tap_pop = nullptr;   // [R, taps] popc of each filter's bits per tap (PM1)
  const int32_t* w_total = nullptr;     // [R] popc of each filter's bits (PM1)
  int C = 0;                            // input channels
  ConvShape s{};
};

// row_of_channel: int32 [K] on the device, or undefined for the identity.
void run_epilogue(const Epilogue& e, const at::Tensor& acc, const at::Tensor& row_of_channel,
                  const BinaryFix& fix, cudaStream_t stream);

}  // namespace cmn::cuda
