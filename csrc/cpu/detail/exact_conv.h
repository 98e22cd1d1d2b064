// Exact integer convolution drivers shared by int8_conv2d and apot_conv2d: im2col of an NHWC buffer per block
// of output pixels (out-of-frame taps are zeros: exact zero padding), a row-dot kernel against filter rows
// laid out tap-major [R][L] with L = round_up(taps * C, 8), and the fused epilogue.
#pragma once

#include "common/checks.h"
#include "common/epilogue.h"
#include "cpu/detail/rowdot.h"

namespace cmn::cpu {

inline int64_t conv_row_length(const ConvGeom& g) { return round_up(g.taps() * g.C, 8); }

// Values are integers held in floats; max_abs_product bounds |x * w| (sets the lane flush interval).
void exact_conv_f32(const ConvGeom& g, const float* x_nhwc, const float* wrows, int64_t R, int64_t max_abs_product,
                    const Epilogue& ep, const int64_t* row_of_channel);

// The literal shift-add path: x values as int32, filters as 4-bit codes into a shift table.
void exact_conv_shift_add(const ConvGeom& g, const int32_t* x_nhwc, const uint8_t* wcodes, int64_t R,
                          const ShiftTable& table, const Epilogue& ep, const int64_t* row_of_channel);

}  // namespace cmn::cpu
