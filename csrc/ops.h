// C++ signatures shared by the CPU and CUDA backends. Schemas live in registration.cpp only.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <string_view>
#include <vector>

namespace cmn {

// Keyword-only epilogue arguments shared by every convolution / matmul op (see common/epilogue.h).
struct EpilogueArgs {
  std::optional<at::Tensor> scale;       // float32 [K]: per-output-channel multiplier
  std::optional<at::Tensor> bias;        // float32 [K]: per-output-channel offset (folded BatchNorm)
  bool relu = false;
  std::string_view output = "int";       // "int" | "float" | "int8" | "uint8" | "bits" | "int4"
  std::optional<at::ScalarType> out_dtype;  // for output="float": float32 (default), float16, bfloat16
  double out_scale = 1.0;                // int8/uint8: q = round(y / out_scale); int4: u = y / out_scale
  std::optional<std::string_view> out_encoding;  // for output="bits": "pm1" | "01"
  std::string_view out_round = "half_even";      // int8/uint8: "half_even" (nearbyint) | "half_up" (floor(q + .5))
  std::optional<std::vector<int64_t>> out_range;  // int8/uint8: [lo, hi] clamp, inside the dtype's range
  std::optional<std::vector<double>> out_thresholds;  // int4: ascending, code = #(t <= u), at most 15
  std::optional<at::Tensor> residual;    // [N, Cr, Hr, Wr] (any memory format) float or int8/uint8 codes
  double residual_scale = 1.0;           // residual codes are dequantized as float(code) * residual_scale
  int64_t residual_stride = 1;           // output pixel (oy, ox) adds residual pixel (oy * s, ox * s)
  int64_t residual_offset = 0;           // output channel k adds residual channel k - offset (0 outside)
  std::optional<at::Tensor> float_out;   // fp32 [N, K, Ho, Wo] channels_last: also receives y (before quantizing)
};

// ---- CPU -----------------------------------------------------------------------------------------------------
at::Tensor pack_bits_cpu(const at::Tensor& x, std::string_view encoding);
at::Tensor pack_int4_cpu(const at::Tensor& codes);
at::Tensor binary_conv2d_cpu(const at::Tensor& x_bits, const at::Tensor& w_bits, int64_t in_channels,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                             std::string_view encoding, const EpilogueArgs& epi,
                             const std::optional<at::Tensor>& prepacked);
at::Tensor int8_conv2d_cpu(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride, at::IntArrayRef padding,
                           at::IntArrayRef dilation, const std::optional<at::Tensor>& keep, bool compact,
                           const EpilogueArgs& epi, const std::optional<at::Tensor>& prepacked);
at::Tensor apot_matmul_cpu(const at::Tensor& a_packed, const at::Tensor& a_levels, const at::Tensor& b_packed,
                           const at::Tensor& b_levels, int64_t k, std::string_view method, const EpilogueArgs& epi);
at::Tensor apot_conv2d_cpu(const at::Tensor& x_packed, const at::Tensor& x_levels, const at::Tensor& w_packed,
                           const at::Tensor& w_levels, int64_t in_channels, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, std::string_view method,
                           const EpilogueArgs& epi, const std::optional<at::Tensor>& prepacked);
// Weight layouts the CPU kernels prefer, prepared once (convert / load time), see cpu/prepack.cpp.
at::Tensor int8_prepack_cpu(const at::Tensor& w);
at::Tensor binary_prepack_cpu(const at::Tensor& w_bits, int64_t in_channels);

// ---- CUDA ----------------------------------------------------------------------------------------------------
// `prepacked` is the CPU kernels' weight layout: the CUDA kernels take the weights themselves and ignore it (a
// deploy model moved to the GPU keeps passing it).
at::Tensor pack_bits_cuda(const at::Tensor& x, std::string_view encoding);
at::Tensor pack_int4_cuda(const at::Tensor& codes);
at::Tensor binary_conv2d_cuda(const at::Tensor& x_bits, const at::Tensor& w_bits, int64_t in_channels,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                              std::string_view encoding, const EpilogueArgs& epi,
                              const std::optional<at::Tensor>& prepacked);
at::Tensor int8_conv2d_cuda(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, const std::optional<at::Tensor>& keep,
                            bool compact, const EpilogueArgs& epi, const std::optional<at::Tensor>& prepacked);
at::Tensor apot_matmul_cuda(const at::Tensor& a_packed, const at::Tensor& a_levels, const at::Tensor& b_packed,
                            const at::Tensor& b_levels, int64_t k, std::string_view method, const EpilogueArgs& epi);
at::Tensor apot_conv2d_cuda(const at::Tensor& x_packed, const at::Tensor& x_levels, const at::Tensor& w_packed,
                            const at::Tensor& w_levels, int64_t in_channels, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, std::string_view method,
                            const EpilogueArgs& epi, const std::optional<at::Tensor>& prepacked);

}  // namespace cmn
