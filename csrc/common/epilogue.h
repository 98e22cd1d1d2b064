// The fused epilogue shared by every conv / matmul op. Given the exact int32 accumulator `acc` of output
// channel k it produces, by `output`:
//   "int"          acc itself (int32 [N, K, spatial...]); scale/bias/relu are refused here
//   "float"        y = float(acc) * scale[k] + bias[k], then max(y, 0) if relu; dtype out_dtype (fp32 default)
//   "int8"/"uint8" clamp(round_half_even(y / out_scale)) to the type's range
//   "bits"         pack_bits(y, out_encoding) laid out [N, spatial..., ceil(K/32)] for the next binary layer
// y is computed in fp32 with one rounding per operation (no FMA), exactly like the PyTorch reference.
// A channel that was not computed (a pruned filter) has acc = 0 and goes through the same epilogue.
#pragma once

#include "common/checks.h"
#include "ops.h"

#include <vector>

namespace cmn {

enum class OutKind { Int, Float, Int8, Uint8, Bits };

struct Epilogue {
  OutKind kind = OutKind::Int;
  at::ScalarType float_dtype = at::kFloat;
  bool relu = false;
  float out_scale = 1.f;
  BitEncoding bits_encoding = BitEncoding::PM1;
  at::Tensor scale, bias;  // float32 contiguous [K], or undefined
  int64_t K = 0;           // output channels
  int64_t P = 1;           // pixels per image
  at::Tensor out;

  // Validates the keyword arguments and allocates `out` for N images x K channels x spatial.
  static Epilogue make(const char* op, const EpilogueArgs& args, int64_t N, int64_t K, at::IntArrayRef spatial,
                       const at::TensorOptions& opts, BitEncoding default_bits_encoding);

  // CPU: writes pixels [p0, p0 + np) of image n. acc[r * ld + j] holds the accumulator of computed row r at
  // pixel p0 + j; row_of_channel[k] is the row of output channel k (-1: not computed), nullptr = identity.
  void write_block(int64_t n, int64_t p0, int64_t np, const int32_t* acc, int64_t ld,
                   const int64_t* row_of_channel) const;
};

}  // namespace cmn
