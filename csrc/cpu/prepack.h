// Weight layouts of the CPU kernels, built once by the prepack ops (at convert / load time) or per call when a
// caller passes none. Both are 1-d tensors with a 16-word header that the ops check against the weights.
#pragma once

#include "cpu/kernels/job.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace cmn::cpu {

struct Int8Packed {  // see int8_prepack_cpu
  int64_t R, C, KH, KW, Rpad, Cp2, Cq4;
  const int32_t* pairs;
  const int32_t* quads;
  const int32_t* sum;
  const int32_t* wino;  // Winograd F(2x2, 3x3) filters (3x3 only), or null
  int64_t w_max_abs;
  const int32_t* flat;  // [ceil(taps C / 2)][Rpad]: taps x channels as one reduction
};
// The job's weight fields from a prepacked view (rows R, their layouts and bounds).
void set_weights(Int8Job& job, const Int8Packed& pk);
// Builds the layout of int8 weights [R, C, kh, kw] (the rows the kernel computes).
at::Tensor int8_pack(const at::Tensor& w);
// Checks a prepacked tensor against the rows / geometry the op will compute and returns its views.
Int8Packed int8_packed_view(const char* op, const at::Tensor& packed, int64_t R, int64_t C, int64_t KH, int64_t KW);

struct BinaryPacked {  // see binary_prepack_cpu
  int64_t K, C, KH, KW, Kpad, nw;
  const uint64_t* cols;
  const uint64_t* rows;
  const int32_t* tappop;
  const int32_t* total;
};
at::Tensor binary_pack(const at::Tensor& w_bits, int64_t in_channels);
BinaryPacked binary_packed_view(const char* op, const at::Tensor& packed, int64_t K, int64_t C, int64_t KH,
                                int64_t KW);

}  // namespace cmn::cpu
