// Int8 convolution with masked (pruned) filters on CPU: an exact direct convolution on NHWC inputs that
// computes the kept filters only (cpu/kernels/int8_direct.inl, instruction set chosen at run time). Pruned
// output channels are dropped (compact=True) or go through the epilogue with acc = 0.
#include "common/epilogue.h"
#include "common/validate.h"
#include "cpu/kernels/dispatch.h"
#include "cpu/prepack.h"
#include "ops.h"

#include <ATen/ATen.h>

#include <vector>

namespace cmn {

namespace cpu {
Geom geom_of(const ConvGeom& g) {
  return {g.N, g.C, g.H, g.W, g.K, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW, g.DH, g.DW, g.HO, g.WO};
}
}  // namespace cpu

at::Tensor int8_conv2d_cpu(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, const std::optional<at::Tensor>& keep,
                           bool compact, const EpilogueArgs& epi, const std::optional<at::Tensor>& prepacked) {
  const char* op = "cmn::int8_conv2d";
  const auto plan = validate_int8_conv2d(x, w, stride, padding, dilation, keep);
  const auto& g = plan.g;
  const int64_t R = static_cast<int64_t>(plan.kept.size());
  const int64_t K_out = compact ? R : g.K;
  auto ep = Epilogue::make(op, epi, g.N, K_out, {g.HO, g.WO}, x.options(), BitEncoding::PM1);
  if (g.N == 0 || K_out == 0 || g.HO * g.WO == 0) return ep.out;

  // Weights as the kernel reads them: given, or built here from the computed rows.
  at::Tensor packed;
  if (prepacked && prepacked->defined()) {
    packed = *prepacked;
  } else {
    at::Tensor rows = w;
    if (!plan.w_compacted && R != g.K) {
      rows = w.index_select(0, at::tensor(plan.kept, at::TensorOptions().dtype(at::kLong)));
    }
    packed = cpu::int8_pack(rows);
  }
  const auto pk = cpu::int8_packed_view(op, packed, R, g.C, g.KH, g.KW);

  std::vector<int32_t> row_of_channel;
  if (!compact && R != g.K) {
    row_of_channel.assign(g.K, -1);
    for (int64_t r = 0; r < R; ++r) row_of_channel[plan.kept[r]] = int32_t(r);
  }
  const auto x_nhwc = x.permute({0, 2, 3, 1}).contiguous();  // no copy for channels_last inputs

  cpu::Int8Job job;
  job.g = cpu::geom_of(g);
  job.in = plan.x_unsigned ? cpu::InCode::U8 : cpu::InCode::S8;
  job.x = static_cast<const uint8_t*>(x_nhwc.data_ptr());
  job.x_pixel_bytes = g.C;
  cpu::set_weights(job, pk);
  job.x_max_abs = plan.x_unsigned ? 255 : 128;
  job.epi = ep.view(row_of_channel.empty() ? nullptr : row_of_channel.data());
  cpu::run_int8(job);
  return ep.out;
}

}  // namespace cmn
