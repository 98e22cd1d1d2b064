// Per-op input validation, shared by the CPU and CUDA backends so both refuse exactly the same inputs.
#pragma once

#include "common/checks.h"
#include "ops.h"

#include <array>

namespace cmn {

BitEncoding validate_pack_bits(const at::Tensor& x, std::string_view encoding);
void validate_pack_int4(const at::Tensor& codes);
// The value check of pack_int4 for codes on an accelerator (ATen reductions; the CPU kernel checks inline).
void check_int4_codes_on_device(const at::Tensor& codes);

struct BinaryConvPlan {
  ConvGeom g;
  BitEncoding enc;
};
BinaryConvPlan validate_binary_conv2d(const at::Tensor& x_bits, const at::Tensor& w_bits, int64_t in_channels,
                                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                      std::string_view encoding);

struct Int8ConvPlan {
  ConvGeom g;           // g.K = full number of output channels (keep.numel() when keep is given)
  bool x_unsigned;      // uint8 activations
  bool w_compacted;     // w holds only the kept filters
  bool kept_known;      // `kept` was read (false: a device mask left on the device, see read_keep)
  std::vector<int64_t> kept;  // kept channel indices (all channels when keep is None)
};
// With read_keep, reads `keep` (a bool [K] mask) on the host and checks w's rows against it; without, only
// the shapes are checked (w holds K rows, or fewer: the kept ones) and the mask stays where it is.
Int8ConvPlan validate_int8_conv2d(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                  const std::optional<at::Tensor>& keep, bool read_keep = true);

enum class ApotMethod { ShiftAdd, Int8 };
struct LevelTable {
  std::array<int32_t, 16> v;
  int64_t max_abs;
  bool fits_int8;
  bool shift_add_ok;
  int bad_code;  // first level that is not 0 / +-2^p / +-(2^p + 2^q), or -1
};
// Level tables may live on the CPU beside codes on an accelerator (read without a device synchronisation).
LevelTable read_levels(const char* op, const char* arg, const at::Tensor& levels);
void check_levels_device(const char* op, const char* arg, const at::Tensor& levels, const at::Device& codes_device);
ApotMethod choose_apot_method(const char* op, std::string_view method, const LevelTable& a, const char* a_name,
                              const LevelTable& b, const char* b_name);

struct ApotMatmulPlan {
  int64_t M, N, k;
  LevelTable a, b;
  ApotMethod method;
};
ApotMatmulPlan validate_apot_matmul(const at::Tensor& a_packed, const at::Tensor& a_levels,
                                   const at::Tensor& b_packed, const at::Tensor& b_levels, int64_t k,
                                   std::string_view method);

struct ApotConvPlan {
  ConvGeom g;
  LevelTable x, w;
  ApotMethod method;
};
ApotConvPlan validate_apot_conv2d(const at::Tensor& x_packed, const at::Tensor& x_levels,
                                  const at::Tensor& w_packed, const at::Tensor& w_levels, int64_t in_channels,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                  std::string_view method);

}  // namespace cmn
