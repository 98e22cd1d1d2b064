// The fused epilogue shared by every conv / matmul op. Given the exact int32 accumulator `acc` of output
// channel k (0 for a channel that was not computed, e.g. a pruned filter) it computes, in fp32 with one
// rounding per operation (no FMA), exactly like cmn_ext.ops.reference:
//   y = float(acc) * scale[k] + bias[k] + residual      (residual: see EpilogueArgs in ops.h)
//   y = max(y, 0) if relu;  float_out <- y (when given)
// and writes `output`:
//   "int"          acc itself (int32); scale / bias / relu / residual are refused here
//   "float"        y in out_dtype (fp32 default)
//   "int8"/"uint8" clamp(round(y / out_scale)) to out_range (default: the dtype's range); round half to even,
//                  or half up with out_round="half_up" (the rounding of the QAT quantizers)
//   "bits"         pack_bits(y, out_encoding) laid out [N, spatial..., ceil(K/32)] for the next binary layer
//   "int4"         code = #(out_thresholds[i] <= y / out_scale), nibble-packed [N, spatial..., ceil(K/2)]
//                  (element 2j in the low nibble) for the next APoT layer
// Value outputs of convolutions are [N, K, Ho, Wo] in channels_last memory (NHWC); matmuls give [M, N].
#pragma once

#include "common/checks.h"
#include "cpu/kernels/job.h"
#include "ops.h"

#include <vector>

namespace cmn {

enum class OutKind { Int, Float, Int8, Uint8, Bits, Int4 };

struct Epilogue {
  OutKind kind = OutKind::Int;
  at::ScalarType float_dtype = at::kFloat;
  bool relu = false;
  float out_scale = 1.f;
  bool round_half_up = false;
  int32_t qmin = 0, qmax = 0;
  BitEncoding bits_encoding = BitEncoding::PM1;
  std::vector<float> thresholds;
  at::Tensor scale, bias;      // float32 contiguous [K], or undefined
  at::Tensor residual;         // NHWC contiguous [N, Hr, Wr, Cr] (matmul: [M, Cr]), or undefined
  float residual_scale = 1.f;
  int64_t res_h = 1, res_w = 1, res_c = 0, res_stride = 1, res_offset = 0;
  at::Tensor float_out;        // fp32, NHWC memory, or undefined
  int64_t K = 0;               // output channels
  int64_t P = 1;               // pixels per image
  int64_t WO = 1;              // output width
  at::Tensor out;

  // Validates the keyword arguments and allocates `out` for N images x K channels x spatial (empty spatial:
  // a matmul, [N, K]).
  static Epilogue make(const char* op, const EpilogueArgs& args, int64_t N, int64_t K, at::IntArrayRef spatial,
                       const at::TensorOptions& opts, BitEncoding default_bits_encoding);

  // The plain-data form the CPU kernels take (row_of_channel: [K] accumulator row per channel, -1 = 0).
  cpu::EpiView view(const int32_t* row_of_channel = nullptr) const;

  // CPU: writes pixels [p0, p0 + np) of image n; acc[j * ld + r] holds row r at pixel p0 + j.
  void write_pixels(int64_t n, int64_t p0, int64_t np, const int32_t* acc, int64_t ld,
                    const int32_t* row_of_channel = nullptr) const;
};

}  // namespace cmn
