// Int8 convolution with masked (pruned) filters on CPU. Only the kept filters become GEMM rows, so pruned
// filters cost nothing; their output channels are either dropped (compact=True) or left as acc = 0.
#include "common/epilogue.h"
#include "common/validate.h"
#include "cpu/detail/exact_conv.h"
#include "ops.h"

#include <ATen/ATen.h>

#include <vector>

namespace cmn {

at::Tensor int8_conv2d_cpu(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, const std::optional<at::Tensor>& keep,
                           bool compact, const EpilogueArgs& epi) {
  const auto plan = validate_int8_conv2d(x, w, stride, padding, dilation, keep);
  const auto& g = plan.g;
  const int64_t R = static_cast<int64_t>(plan.kept.size());
  const int64_t K_out = compact ? R : g.K;
  auto ep = Epilogue::make("cmn::int8_conv2d", epi, g.N, K_out, {g.HO, g.WO}, x.options(), BitEncoding::PM1);
  if (g.N == 0 || K_out == 0) return ep.out;

  std::vector<int64_t> row_of_channel(K_out, -1);
  if (compact) {
    for (int64_t r = 0; r < R; ++r) row_of_channel[r] = r;
  } else {
    for (int64_t r = 0; r < R; ++r) row_of_channel[plan.kept[r]] = r;
  }

  // Kept filters as tap-major rows [R][L] (matching the NHWC im2col order).
  const int64_t T = g.taps(), C = g.C, L = cpu::conv_row_length(g);
  std::vector<float> wrows(std::max<int64_t>(R, 1) * L, 0.f);
  const auto wc = w.contiguous();
  const int8_t* wp = wc.data_ptr<int8_t>();
  for (int64_t r = 0; r < R; ++r) {
    const int64_t src_k = plan.w_compacted ? r : plan.kept[r];
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < T; ++t) wrows[r * L + t * C + c] = static_cast<float>(wp[(src_k * C + c) * T + t]);
  }
  const auto x_nhwc = x.permute({0, 2, 3, 1}).to(at::kFloat).contiguous();
  const int64_t max_product = 128 * (plan.x_unsigned ? 255 : 128);
  cpu::exact_conv_f32(g, x_nhwc.data_ptr<float>(), wrows.data(), R, max_product, ep, row_of_channel.data());
  return ep.out;
}

}  // namespace cmn
