// C++ signatures shared by the CPU and CUDA backends. Schemas live in registration.cpp only.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <optional>
#include <string_view>

namespace cmn {

// Keyword-only epilogue arguments shared by every convolution / matmul op (see common/epilogue.h).
struct EpilogueArgs {
  std::optional<at::Tensor> scale;       // float32 [K]: per-output-channel multiplier
  std::optional<at::Tensor> bias;        // float32 [K]: per-output-channel offset (folded BatchNorm)
  bool relu = false;
  std::string_view output = "int";       // "int" | "float" | "int8" | "uint8" | "bits"
  std::optional<at::ScalarType> out_dtype;  // for output="float": float32 (default), float16, bfloat16
  double out_scale = 1.0;                // for output="int8"/"uint8": q = round(y / out_scale), clamped
  std::optional<std::string_view> out_encoding;  // for output="bits": "pm1" | "01"
};

#define CMN_FOR_EACH_BACKEND(X) X(cpu) X(cuda)

#define CMN_DECLARE_OPS(dev)                                                                                 \
  at::Tensor pack_bits_##dev(const at::Tensor& x, std::string_view encoding);                               \
  at::Tensor pack_int4_##dev(const at::Tensor& codes);                                                       \
  at::Tensor binary_conv2d_##dev(const at::Tensor& x_bits, const at::Tensor& w_bits, int64_t in_channels,   \
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,  \
                                 std::string_view encoding, const EpilogueArgs& epi);                        \
  at::Tensor int8_conv2d_##dev(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,            \
                               at::IntArrayRef padding, at::IntArrayRef dilation,                            \
                               const std::optional<at::Tensor>& keep, bool compact, const EpilogueArgs& epi); \
  at::Tensor apot_matmul_##dev(const at::Tensor& a_packed, const at::Tensor& a_levels,                      \
                               const at::Tensor& b_packed, const at::Tensor& b_levels, int64_t k,           \
                               std::string_view method, const EpilogueArgs& epi);                           \
  at::Tensor apot_conv2d_##dev(const at::Tensor& x_packed, const at::Tensor& x_levels,                      \
                               const at::Tensor& w_packed, const at::Tensor& w_levels, int64_t in_channels, \
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,    \
                               std::string_view method, const EpilogueArgs& epi);

CMN_FOR_EACH_BACKEND(CMN_DECLARE_OPS)

}  // namespace cmn
