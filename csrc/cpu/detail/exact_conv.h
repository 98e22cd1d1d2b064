// The literal shift-add convolution of apot_conv2d (method="shift_add"): im2col of an NHWC buffer per block of
// output pixels (out-of-frame taps are zeros: exact zero padding), the shift-add row dot against filter codes
// laid out tap-major [R][L] with L = round_up(taps * C, 8), and the fused epilogue.
#pragma once

#include "common/checks.h"
#include "common/epilogue.h"
#include "cpu/detail/rowdot.h"

namespace cmn::cpu {

inline int64_t conv_row_length(const ConvGeom& g) { return round_up(g.taps() * g.C, 8); }

// x values as int32 (decoded levels), filters as 4-bit codes into a shift table.
void exact_conv_shift_add(const ConvGeom& g, const int32_t* x_nhwc, const uint8_t* wcodes, int64_t R,
                          const ShiftTable& table, const Epilogue& ep);

}  // namespace cmn::cpu
