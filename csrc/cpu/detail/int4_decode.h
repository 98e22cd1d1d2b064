// Decoding of packed 4-bit codes (element 2j in the low nibble of byte j, 2j+1 in the high nibble).
#pragma once

#include "common/validate.h"
#include "cpu/detail/rowdot.h"

#include <cstdint>

namespace cmn::cpu {

// dst[i] = levels[code i] for i < k (AVX2 vpshufb table lookup when every level fits int8).
void decode_int4_f32(const uint8_t* src, int64_t k, const LevelTable& levels, float* dst);
void decode_int4_i32(const uint8_t* src, int64_t k, const LevelTable& levels, int32_t* dst);
void unpack_int4_codes(const uint8_t* src, int64_t k, uint8_t* dst);

ShiftTable make_shift_table(const LevelTable& levels);

}  // namespace cmn::cpu
