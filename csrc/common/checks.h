// Argument validation shared by the CPU and CUDA backends. Every message names the op, the argument, what
// was expected and what was given.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace cmn {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

std::string shape_str(const at::Tensor& t);

void check_dtype(const char* op, const char* arg, const at::Tensor& t, at::ScalarType expected);
void check_dtype2(const char* op, const char* arg, const at::Tensor& t, at::ScalarType e1, at::ScalarType e2);
void check_rank(const char* op, const char* arg, const at::Tensor& t, int64_t rank, const char* layout);
void check_same_device(const char* op, std::initializer_list<std::pair<const char*, const at::Tensor*>> ts);
int64_t check_pos_int(const char* op, const char* arg, int64_t v);  // v >= 1

enum class BitEncoding { PM1, ZeroOne };
BitEncoding parse_encoding(const char* op, const char* arg, std::string_view s);

// Convolution geometry with exact zero padding. Validates stride >= 1, padding >= 0, dilation >= 1 (each a
// list of two ints) and that the dilated kernel fits in the padded input.
struct ConvGeom {
  int64_t N, C, H, W, K, KH, KW, SH, SW, PH, PW, DH, DW, HO, WO;
  int64_t taps() const { return KH * KW; }
  int64_t pixels() const { return HO * WO; }
};
ConvGeom conv_geometry(const char* op, int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t KH,
                       int64_t KW, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation);

// Integer accumulators are int32: refuse shapes whose worst-case sum could overflow, instead of wrapping.
void check_accumulator_range(const char* op, int64_t terms, int64_t max_abs_a, int64_t max_abs_b);

}  // namespace cmn
