// APoT matmul / conv on packed 4-bit codes, two exact paths that agree bit for bit:
//   int8      codes decoded through the level table into integers, exact integer GEMM / direct convolution
//             (the conv shares the int8 kernel: cpu/kernels/int8_direct.inl, nibbles decoded per image)
//   shift_add the papers' multiplier-free arithmetic: a * (+-(2^p + 2^q)) = +-((a << p) + (a << q))
#include "common/epilogue.h"
#include "common/validate.h"
#include "cpu/detail/exact_conv.h"
#include "cpu/detail/int4_decode.h"
#include "cpu/kernels/dispatch.h"
#include "cpu/prepack.h"
#include "ops.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

namespace cmn {

namespace cpu {
Geom geom_of(const ConvGeom& g);
}

namespace {

constexpr int64_t kPanelRows = 64;    // B rows decoded per task (weight-bandwidth bound at small M)
constexpr int64_t kRowBlock = 48;     // A rows per inner block
constexpr int64_t kDepthBlock = 1024; // elements of the reduction per inner block (fits L2 with the panel)

void apot_matmul_int8(const ApotMatmulPlan& p, const uint8_t* a, const uint8_t* b, int64_t kb, int32_t* out) {
  const int64_t L = round_up(p.k, 8);
  std::vector<float> af(p.M * L, 0.f);
  at::parallel_for(0, p.M, 16, [&](int64_t s, int64_t e) {
    for (int64_t m = s; m < e; ++m) cpu::decode_int4_f32(a + m * kb, p.k, p.a, af.data() + m * L);
  });
  const int64_t flush = cpu::exact_flush_chunks(p.a.max_abs * p.b.max_abs);
  const int64_t panels = ceil_div(p.N, kPanelRows);
  at::parallel_for(0, panels, 1, [&](int64_t s, int64_t e) {
    std::vector<float> panel(kPanelRows * L, 0.f);
    for (int64_t t = s; t < e; ++t) {
      const int64_t n0 = t * kPanelRows, nb = std::min(kPanelRows, p.N - n0);
      for (int64_t j = 0; j < nb; ++j) cpu::decode_int4_f32(b + (n0 + j) * kb, p.k, p.b, panel.data() + j * L);
      for (int64_t m0 = 0; m0 < p.M; m0 += kRowBlock) {
        const int64_t mb = std::min(kRowBlock, p.M - m0);
        for (int64_t l0 = 0; l0 < L; l0 += kDepthBlock) {
          const int64_t lb = std::min(kDepthBlock, L - l0);
          cpu::rowdot_f32_exact(af.data() + m0 * L + l0, mb, panel.data() + l0, nb, lb, L, flush,
                                out + m0 * p.N + n0, p.N, 1, /*accumulate=*/l0 > 0);
        }
      }
    }
  });
}

void apot_matmul_shift_add(const ApotMatmulPlan& p, const uint8_t* a, const uint8_t* b, int64_t kb,
                           int32_t* out) {
  const auto table = cpu::make_shift_table(p.b);
  std::vector<int32_t> ai(p.M * p.k);
  for (int64_t m = 0; m < p.M; ++m) cpu::decode_int4_i32(a + m * kb, p.k, p.a, ai.data() + m * p.k);
  at::parallel_for(0, p.N, 16, [&](int64_t s, int64_t e) {
    std::vector<uint8_t> codes(p.k);
    for (int64_t n = s; n < e; ++n) {
      cpu::unpack_int4_codes(b + n * kb, p.k, codes.data());
      cpu::rowdot_shift_add(ai.data(), p.M, codes.data(), 1, p.k, table, out + n, p.N, 1);
    }
  });
}

}  // namespace

at::Tensor apot_matmul_cpu(const at::Tensor& a_packed, const at::Tensor& a_levels, const at::Tensor& b_packed,
                           const at::Tensor& b_levels, int64_t k, std::string_view method, const EpilogueArgs& epi) {
  const auto p = validate_apot_matmul(a_packed, a_levels, b_packed, b_levels, k, method);
  auto ep = Epilogue::make("cmn::apot_matmul", epi, p.M, p.N, {}, a_packed.options(), BitEncoding::PM1);
  if (p.M == 0 || p.N == 0) return ep.out;
  const auto a = a_packed.contiguous(), b = b_packed.contiguous();
  const bool direct = ep.kind == OutKind::Int;
  at::Tensor acc = direct ? ep.out : at::empty({p.M, p.N}, a.options().dtype(at::kInt));
  int32_t* accp = acc.data_ptr<int32_t>();
  const int64_t kb = ceil_div(k, 2);
  if (p.method == ApotMethod::Int8) apot_matmul_int8(p, a.data_ptr<uint8_t>(), b.data_ptr<uint8_t>(), kb, accp);
  else apot_matmul_shift_add(p, a.data_ptr<uint8_t>(), b.data_ptr<uint8_t>(), kb, accp);
  if (!direct) {
    // Row m is "image" m with one pixel; its N columns are the output channels.
    at::parallel_for(0, p.M, 16, [&](int64_t s, int64_t e) {
      for (int64_t m = s; m < e; ++m) ep.write_pixels(m, 0, 1, accp + m * p.N, p.N);
    });
  }
  return ep.out;
}

at::Tensor apot_conv2d_cpu(const at::Tensor& x_packed, const at::Tensor& x_levels, const at::Tensor& w_packed,
                           const at::Tensor& w_levels, int64_t in_channels, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, std::string_view method,
                           const EpilogueArgs& epi, const std::optional<at::Tensor>& prepacked) {
  const char* op = "cmn::apot_conv2d";
  const auto p = validate_apot_conv2d(x_packed, x_levels, w_packed, w_levels, in_channels, stride, padding,
                                      dilation, method);
  const auto& g = p.g;
  auto ep = Epilogue::make(op, epi, g.N, g.K, {g.HO, g.WO}, x_packed.options(), BitEncoding::PM1);
  if (g.N == 0 || g.K == 0 || g.HO * g.WO == 0) return ep.out;
  const auto x = x_packed.contiguous(), w = w_packed.contiguous();
  const uint8_t* xp = x.data_ptr<uint8_t>();
  const uint8_t* wp = w.data_ptr<uint8_t>();
  const int64_t C = g.C, cb = ceil_div(C, 2), T = g.taps();
  if (p.method == ApotMethod::Int8) {
    at::Tensor packed;
    if (prepacked && prepacked->defined()) {
      packed = *prepacked;
    } else {  // decode the weight codes to int8 [K, C, kh, kw] and lay them out for the kernel
      auto wd = at::empty({g.K, C, g.KH, g.KW}, w.options().dtype(at::kChar));
      int8_t* d = wd.data_ptr<int8_t>();
      for (int64_t k = 0; k < g.K; ++k)
        for (int64_t t = 0; t < T; ++t)
          for (int64_t c = 0; c < C; ++c) {
            const uint8_t byte = wp[(k * T + t) * cb + c / 2];
            d[(k * C + c) * T + t] = int8_t(p.w.v[(c % 2) ? (byte >> 4) : (byte & 15)]);
          }
      packed = cpu::int8_pack(wd);
    }
    const auto pk = cpu::int8_packed_view(op, packed, g.K, C, g.KH, g.KW);
    cpu::Int8Job job;
    job.g = cpu::geom_of(g);
    job.in = cpu::InCode::Int4;
    job.x = xp;
    job.x_pixel_bytes = cb;
    job.levels_fit_int8 = p.x.fits_int8;
    for (int c = 0; c < 16; ++c) {
      job.levels[c] = int16_t(p.x.v[c]);
      job.levels8[c] = int8_t(p.x.fits_int8 ? p.x.v[c] : 0);
    }
    cpu::set_weights(job, pk);
    job.x_max_abs = p.x.max_abs;
    job.epi = ep.view();
    // The quads (VNNI) layout stores activation levels as uint8: fall back to pairs for negative levels.
    bool nonneg = true;
    for (int c = 0; c < 16; ++c) nonneg = nonneg && p.x.v[c] >= 0;
    job.quads_ok = nonneg;
    cpu::run_int8(job);
  } else {
    TORCH_CHECK_VALUE(!prepacked || !prepacked->defined(), op, ": argument 'prepacked' holds decoded int8 weights "
                      "for method \"int8\"; method=\"shift_add\" reads the codes and takes prepacked=None");
    const int64_t pixels_in = g.N * g.H * g.W, L = cpu::conv_row_length(g);
    std::vector<int32_t> xv(pixels_in * C);
    at::parallel_for(0, pixels_in, 256, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) cpu::decode_int4_i32(xp + i * cb, C, p.x, xv.data() + i * C);
    });
    std::vector<uint8_t> wcodes(g.K * L, 0);
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t t = 0; t < T; ++t) cpu::unpack_int4_codes(wp + (k * T + t) * cb, C, wcodes.data() + k * L + t * C);
    cpu::exact_conv_shift_add(g, xv.data(), wcodes.data(), g.K, cpu::make_shift_table(p.w), ep);
  }
  return ep.out;
}

}  // namespace cmn
