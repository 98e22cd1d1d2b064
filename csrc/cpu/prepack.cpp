// The CPU kernels' weight layouts (see cpu/kernels/job.h for how the kernels read them).
//
// int8 (int32 words): header[16] = magic "CMN8", version, R, C, KH, KW, Rpad, Cp2, Cq4, offsets of the
//   three sections, total length, offset of the Winograd section (0: none), max |w|, 0...; then
//   pairs [taps][Cp2][Rpad]  two int16 per word: channels 2i (low half) and 2i + 1 of row r   (vpmaddwd)
//   quads [taps][Cq4][Rpad]  four int8 per word: channels 4i..4i+3 of row r, byte 0 first     (vpdpbusd)
//   sum   [Rpad]             the sum of row r's weights (signed-input compensation of vpdpbusd)
//   wino  [16][Cp2][Rpad]    3x3 filters only: U = G' g G'^T (cpu/kernels/int8_winograd.inl) as int16 pairs
//   flat  [Cf2][Rpad]        taps and channels as one reduction, index t C + c, in int16 pairs (small C)
//   Rows are padded with zero weights to Rpad = a multiple of 8, channels with zeros.
// binary (int64 words): header[16] = magic "CMN1", version, K, C, KH, KW, Kpad, nw, offsets, total, 0...;
//   each filter's patch = its taps' C bits concatenated tap-major (tap t at bits [t C, (t + 1) C)) in nw
//   64-bit words; cols [nw][Kpad] (word i of every filter), rows [Kpad][nw], then the per-tap and total
//   popcounts as int32 [K][taps] and [K]. Filters are padded to Kpad = a multiple of 8 with zero bits.
#include "cpu/prepack.h"

#include "common/checks.h"
#include "ops.h"

#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace cmn::cpu {

namespace {
constexpr int32_t kInt8Magic = 0x384E4D43;    // "CMN8"
constexpr int64_t kBinaryMagic = 0x314E4D43;  // "CMN1"
constexpr int64_t kVersion = 1, kHeader = 16;

template <typename T>
void check_header(const char* op, const at::Tensor& p, at::ScalarType dtype, T magic, const char* maker) {
  TORCH_CHECK_VALUE(p.scalar_type() == dtype && p.dim() == 1 && p.numel() >= kHeader && p.is_contiguous() &&
                        p.device().is_cpu(),
                    op, ": argument 'prepacked' is not a layout from ", maker, " (expected a contiguous 1-d ", dtype,
                    " CPU tensor, got ", p.scalar_type(), " ", shape_str(p), " on ", p.device(), ")");
  const T* h = p.data_ptr<T>();
  TORCH_CHECK_VALUE(h[0] == magic && h[1] == kVersion, op, ": argument 'prepacked' is not a layout from ", maker,
                    " (wrong header)");
}
}  // namespace

at::Tensor int8_pack(const at::Tensor& w_in) {
  const auto w = w_in.contiguous();
  const int64_t R = w.size(0), C = w.size(1), KH = w.size(2), KW = w.size(3), T = KH * KW;
  const int64_t Rpad = round_up(std::max<int64_t>(R, 1), 8), Cp2 = ceil_div(C, 2), Cq4 = ceil_div(C, 4);
  const int64_t off_pairs = kHeader, off_quads = off_pairs + T * Cp2 * Rpad, off_sum = off_quads + T * Cq4 * Rpad;
  const bool wino = KH == 3 && KW == 3;
  const int64_t off_wino = wino ? off_sum + Rpad : 0;
  const int64_t Cf2 = ceil_div(T * C, 2), off_flat = off_sum + Rpad + (wino ? 16 * Cp2 * Rpad : 0);
  const int64_t total = off_flat + Cf2 * Rpad;
  auto out = at::zeros({total}, w.options().dtype(at::kInt));
  int32_t* o = out.data_ptr<int32_t>();
  const int8_t* wp = w.data_ptr<int8_t>();
  int64_t max_abs = 0;
  for (int64_t i = 0; i < w.numel(); ++i) max_abs = std::max<int64_t>(max_abs, std::abs(int64_t(wp[i])));
  const int64_t header[] = {kInt8Magic, kVersion, R,     C,     KH,    KW,       Rpad,    Cp2,
                            Cq4,        off_pairs, off_quads, off_sum, total, off_wino, max_abs, off_flat};
  for (size_t i = 0; i < sizeof(header) / sizeof(header[0]); ++i) o[i] = int32_t(header[i]);
  auto weight = [&](int64_t r, int64_t c, int64_t t) -> int32_t { return c < C ? wp[(r * C + c) * T + t] : 0; };
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t i = 0; i < Cp2; ++i) {
        const uint32_t lo = uint16_t(int16_t(weight(r, 2 * i, t))), hi = uint16_t(int16_t(weight(r, 2 * i + 1, t)));
        o[off_pairs + (t * Cp2 + i) * Rpad + r] = int32_t(lo | (hi << 16));
      }
      for (int64_t i = 0; i < Cq4; ++i) {
        uint32_t v = 0;
        for (int64_t b = 0; b < 4; ++b) v |= uint32_t(uint8_t(int8_t(weight(r, 4 * i + b, t)))) << (8 * b);
        o[off_quads + (t * Cq4 + i) * Rpad + r] = int32_t(v);
      }
    }
  for (int64_t r = 0; r < R; ++r) {
    int64_t s = 0;
    for (int64_t i = 0; i < C * T; ++i) s += wp[r * C * T + i];
    o[off_sum + r] = int32_t(s);
  }
  for (int64_t r = 0; r < R; ++r)
    for (int64_t i = 0; i < Cf2; ++i) {
      auto flat = [&](int64_t f) -> uint32_t { return f < T * C ? uint16_t(int16_t(wp[(r * C + f % C) * T + f / C])) : 0u; };
      o[off_flat + i * Rpad + r] = int32_t(flat(2 * i) | (flat(2 * i + 1) << 16));
    }
  if (wino) {  // U = G' g G'^T, G' = [2 0 0; 1 1 1; 1 -1 1; 0 0 2]: integers with |U| <= 9 max|w|
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < C; ++c) {
        int32_t g[3][3], t[4][3], u[4][4];
        for (int64_t i = 0; i < 9; ++i) g[i / 3][i % 3] = weight(r, c, i);
        for (int64_t j = 0; j < 3; ++j) {
          t[0][j] = 2 * g[0][j];
          t[1][j] = g[0][j] + g[1][j] + g[2][j];
          t[2][j] = g[0][j] - g[1][j] + g[2][j];
          t[3][j] = 2 * g[2][j];
        }
        for (int64_t i = 0; i < 4; ++i) {
          u[i][0] = 2 * t[i][0];
          u[i][1] = t[i][0] + t[i][1] + t[i][2];
          u[i][2] = t[i][0] - t[i][1] + t[i][2];
          u[i][3] = 2 * t[i][2];
        }
        for (int64_t xi = 0; xi < 16; ++xi) {
          uint32_t& word = reinterpret_cast<uint32_t&>(o[off_wino + (xi * Cp2 + c / 2) * Rpad + r]);
          const uint32_t half = uint16_t(int16_t(u[xi / 4][xi % 4]));
          word |= (c % 2) ? (half << 16) : half;
        }
      }
  }
  return out;
}

void set_weights(Int8Job& job, const Int8Packed& pk) {
  job.R = pk.R;
  job.Rpad = pk.Rpad;
  job.Cp2 = pk.Cp2;
  job.Cq4 = pk.Cq4;
  job.w_pairs = pk.pairs;
  job.w_quads = pk.quads;
  job.w_sum = pk.sum;
  job.w_wino = pk.wino;
  job.w_flat = pk.flat;
  job.w_max_abs = pk.w_max_abs;
}

Int8Packed int8_packed_view(const char* op, const at::Tensor& p, int64_t R, int64_t C, int64_t KH, int64_t KW) {
  check_header<int32_t>(op, p, at::kInt, kInt8Magic, "cmn::int8_prepack");
  const int32_t* h = p.data_ptr<int32_t>();
  TORCH_CHECK_VALUE(h[2] == R && h[3] == C && h[4] == KH && h[5] == KW, op, ": argument 'prepacked' holds ", h[2],
                    " rows of ", h[3], " channels x ", h[4], "x", h[5], " but this call computes ", R, " rows of ", C,
                    " channels x ", KH, "x", KW);
  TORCH_CHECK_VALUE(h[12] == p.numel(), op, ": argument 'prepacked' is truncated (", p.numel(), " of ", h[12],
                    " words)");
  return {R, C, KH, KW, h[6], h[7], h[8], h + h[9], h + h[10], h + h[11], h[13] ? h + h[13] : nullptr, h[14],
          h + h[15]};
}

at::Tensor binary_pack(const at::Tensor& w_in, int64_t C) {
  const auto w = w_in.contiguous();
  const int64_t K = w.size(0), KH = w.size(1), KW = w.size(2), Cw = w.size(3), T = KH * KW;
  const int64_t Kpad = round_up(std::max<int64_t>(K, 1), 8), nw = std::max<int64_t>(1, ceil_div(T * C, 64));
  const int64_t off_cols = kHeader, off_rows = off_cols + nw * Kpad, off_tappop = off_rows + Kpad * nw;
  const int64_t off_total = off_tappop + ceil_div(K * T, 2), total = off_total + ceil_div(K, 2);
  auto out = at::zeros({total}, w.options().dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  const int64_t header[] = {kBinaryMagic, kVersion, K, C, KH, KW, Kpad, nw, off_cols, off_rows, off_tappop,
                            off_total, total};
  std::memcpy(o, header, sizeof(header));
  uint64_t* cols = reinterpret_cast<uint64_t*>(o + off_cols);
  uint64_t* rows = reinterpret_cast<uint64_t*>(o + off_rows);
  int32_t* tappop = reinterpret_cast<int32_t*>(o + off_tappop);
  int32_t* totals = reinterpret_cast<int32_t*>(o + off_total);
  const uint32_t* wp = reinterpret_cast<const uint32_t*>(w.data_ptr<int32_t>());
  const uint32_t tail = (C % 32) ? ((1u << (C % 32)) - 1u) : ~0u;
  for (int64_t k = 0; k < K; ++k) {
    uint64_t* row = rows + k * nw;
    int32_t all = 0;
    for (int64_t t = 0; t < T; ++t) {
      int32_t pop = 0;
      for (int64_t i = 0; i < Cw; ++i) {
        const uint32_t v = wp[(k * T + t) * Cw + i] & (i == Cw - 1 ? tail : ~0u);
        pop += __builtin_popcount(v);
        const int64_t pos = t * C + 32 * i, wd = pos >> 6, sh = pos & 63;
        row[wd] |= uint64_t(v) << sh;
        if (sh > 32 && wd + 1 < nw) row[wd + 1] |= uint64_t(v) >> (64 - sh);
      }
      tappop[k * T + t] = pop;
      all += pop;
    }
    totals[k] = all;
    for (int64_t i = 0; i < nw; ++i) cols[i * Kpad + k] = row[i];
  }
  return out;
}

BinaryPacked binary_packed_view(const char* op, const at::Tensor& p, int64_t K, int64_t C, int64_t KH, int64_t KW) {
  check_header<int64_t>(op, p, at::kLong, kBinaryMagic, "cmn::binary_prepack");
  const int64_t* h = p.data_ptr<int64_t>();
  TORCH_CHECK_VALUE(h[2] == K && h[3] == C && h[4] == KH && h[5] == KW, op, ": argument 'prepacked' holds ", h[2],
                    " filters of ", h[3], " channels x ", h[4], "x", h[5], " but 'w_bits' has ", K, " filters of ", C,
                    " channels x ", KH, "x", KW);
  TORCH_CHECK_VALUE(h[12] == p.numel(), op, ": argument 'prepacked' is truncated (", p.numel(), " of ", h[12],
                    " words)");
  return {K,  C,  KH, KW, h[6], h[7], reinterpret_cast<const uint64_t*>(h + h[8]),
          reinterpret_cast<const uint64_t*>(h + h[9]), reinterpret_cast<const int32_t*>(h + h[10]),
          reinterpret_cast<const int32_t*>(h + h[11])};
}

}  // namespace cmn::cpu

namespace cmn {

at::Tensor int8_prepack_cpu(const at::Tensor& w) {
  const char* op = "cmn::int8_prepack";
  check_dtype(op, "w", w, at::kChar);
  check_rank(op, "w", w, 4, "[R, C, kh, kw] (the filters to compute: all, or the kept ones)");
  return cpu::int8_pack(w);
}

at::Tensor binary_prepack_cpu(const at::Tensor& w_bits, int64_t in_channels) {
  const char* op = "cmn::binary_prepack";
  check_dtype(op, "w_bits", w_bits, at::kInt);
  check_rank(op, "w_bits", w_bits, 4, "[K, kh, kw, ceil(C/32)] from pack_bits");
  check_pos_int(op, "in_channels", in_channels);
  TORCH_CHECK_VALUE(w_bits.size(3) == ceil_div(in_channels, 32), op, ": argument 'w_bits' expected ",
                    ceil_div(in_channels, 32), " packed words per tap for in_channels=", in_channels, ", got shape ",
                    shape_str(w_bits));
  return cpu::binary_pack(w_bits, in_channels);
}


}  // namespace cmn
