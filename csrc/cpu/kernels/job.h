// Plain-data descriptions of one kernel call, handed from the ATen-facing code to the instruction-set
// specific kernels (cpu/kernels/isa_*.cpp). The ISA translation units are compiled with different -m flags;
// they see only these structs, intrinsics and their own code (no ATen, no std templates), so no inline
// function compiled for one instruction set can be picked by the linker for another.
#pragma once

#include <cstdint>

namespace cmn::cpu {

enum class OutCode : int32_t { Int, F32, F16, BF16, S8, U8, Bits, Int4 };
enum class ResCode : int32_t { None, F32, F16, BF16, S8, U8 };

// The fused epilogue of DESIGN 3.1/3.5 on NHWC outputs. For output channel k of pixel p of image n:
//   v = acc[row_of_channel[k]] (0 when the row is -1)
//   y = float(v) * scale[k] + bias[k] + residual[n, oy*s, ox*s, k - offset]   (one rounding per operation)
//   y = max(y, 0) if relu;  float_out <- y;  out <- y converted by `kind`.
struct EpiView {
  OutCode kind = OutCode::Int;
  bool relu = false;
  const float* scale = nullptr;  // [K] or null
  const float* bias = nullptr;   // [K] or null
  float out_scale = 1.f;         // S8/U8: q = round(y / out_scale); Int4: u = y / out_scale
  bool round_half_up = false;    // S8/U8: floor(q + 0.5) instead of nearbyint (half to even)
  int32_t qmin = 0, qmax = 0;    // S8/U8 clamp
  bool bits_pm1 = true;          // Bits: pm1 sets the bit where y < 0, "01" where y >= 0.5
  float thresholds[15] = {};     // Int4: code = #(thresholds[i] <= u)
  int32_t n_thresholds = 0;
  ResCode res_kind = ResCode::None;
  const void* res = nullptr;     // NHWC [N, res_h, res_w, res_c]
  float res_scale = 1.f;         // codes: float(code) * res_scale
  int64_t res_h = 0, res_w = 0, res_c = 0, res_stride = 1, res_offset = 0;
  float* float_out = nullptr;    // NHWC fp32 [N, P, K] or null
  void* out = nullptr;           // NHWC: [N, P, K] values, [N, P, ceil(K/32)] bits, [N, P, ceil(K/2)] int4
  int64_t K = 0, P = 1, WO = 1;  // output channels, pixels per image, output width (for residual indexing)
  const int32_t* row_of_channel = nullptr;  // [K] -> accumulator row, -1 = not computed; null = identity
};

struct Geom {
  int64_t N, C, H, W, K, KH, KW, SH, SW, PH, PW, DH, DW, HO, WO;
  int64_t taps() const { return KH * KW; }
  int64_t pixels() const { return HO * WO; }
};

enum class InCode : int32_t { U8, S8, Int4 };

// Int8 / APoT convolution as an exact integer direct convolution on NHWC inputs.
struct Int8Job {
  Geom g;
  InCode in = InCode::U8;
  const uint8_t* x = nullptr;  // NHWC input: C bytes per pixel (U8/S8) or ceil(C/2) bytes of nibbles (Int4)
  int64_t x_pixel_bytes = 0;
  int16_t levels[16] = {};     // Int4: code -> integer level
  int8_t levels8[16] = {};     // the same as int8 when levels_fit_int8 (vector table lookups)
  bool levels_fit_int8 = false;
  // Prepacked weights (cpu/prepack.cpp): R computed rows padded to Rpad (a multiple of 8).
  int64_t R = 0, Rpad = 0, Cp2 = 0, Cq4 = 0;
  const int32_t* w_pairs = nullptr;  // [taps][Cp2][Rpad] two int16 (channels 2i, 2i+1) per int32
  const int32_t* w_quads = nullptr;  // [taps][Cq4][Rpad] four int8 (channels 4i..4i+3) per int32
  const int32_t* w_sum = nullptr;    // [Rpad] sum of each row's weights (VNNI: signed-input compensation)
  bool quads_ok = true;              // inputs fit uint8 quads (false: APoT levels below 0)
  const int32_t* w_wino = nullptr;   // [16][Cp2][Rpad] int16 pairs of G' g G'^T (3x3 filters), or null
  const int32_t* w_flat = nullptr;   // [ceil(taps C / 2)][Rpad] int16 pairs over t C + c (small C), or null
  bool flat = false;                 // run the small-C path (set by the dispatcher)
  int64_t x_max_abs = 0, w_max_abs = 0;  // bounds of |x| and |w| (the Winograd overflow check)
  int64_t wino_rows_per_task = 0;
  const int32_t* offsets = nullptr;  // [P][taps] input pixel index per output pixel and tap; H*W = zero pixel
  int64_t pixels_per_task = 0;
  EpiView epi;
};

// Binary convolution: AND-popcount of tap-concatenated bit patches (cpu/kernels/binary_direct.inl).
struct BinaryJob {
  Geom g;
  bool pm1 = true;
  const uint32_t* x = nullptr;  // NHWC words [N, H, W, x_words]
  int64_t x_words = 0;
  int64_t Kpad = 0, nw = 0;          // filters padded to a multiple of 8; 64-bit words per patch
  const uint64_t* w_cols = nullptr;  // [nw][Kpad]: word i of every filter (vector over filters)
  const uint64_t* w_rows = nullptr;  // [Kpad][nw]: every word of one filter (scalar loops)
  const int32_t* w_tappop = nullptr; // [K][taps] popcount of each filter's bits per tap
  const int32_t* w_total = nullptr;  // [K] popcount of each filter's bits
  const int32_t* offsets = nullptr;     // [P][taps] as in Int8Job
  const int32_t* valid_taps = nullptr;  // [P] taps inside the frame
  int64_t pixels_per_task = 0;
  // "01" input, bits output without residual / float_out / channel map: bit k = (bit_mul[k] * dot >= bit_thr[k]),
  // integer thresholds equal to the float epilogue's decision for every possible dot (dispatch.cpp); else null.
  const int32_t* bit_mul = nullptr;
  const int32_t* bit_thr = nullptr;
  EpiView epi;
};

// Per-thread scratch the caller allocates (sizes from cpu/kernels/dispatch.h).
struct Scratch {
  uint8_t* data = nullptr;
  int64_t bytes = 0;
  int64_t cached_image = -1;  // image whose converted copy is in the scratch (int8 kernels)
};

}  // namespace cmn::cpu
