// Int8 convolution with masked filters on CUDA: only the kept filters become GEMM columns (pruned filters
// cost nothing), computed as an implicit GEMM on the int8 tensor cores (s8 x s8, or u8 x s8 for uint8
// activations); pruned channels are dropped (compact=True) or go through the epilogue with acc = 0.
#include "common/epilogue.h"
#include "common/validate.h"
#include "cuda/detail/epilogue.cuh"
#include "cuda/detail/shape.cuh"
#include "ops.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

namespace cmn {

namespace {
// [N, C, H, W] -> [N, H, W, Cp] with Cp = C rounded up to whole 32-bit words (zero channels added).
at::Tensor nhwc_words(const at::Tensor& t) {
  const int64_t C = t.size(1), Cp = ceil_div(C, 4) * 4;
  return at::constant_pad_nd(t.permute({0, 2, 3, 1}), {0, Cp - C}).contiguous();
}

// Device int32 [K_out] map from output channel to computed column (-1: pruned), for run_epilogue.
at::Tensor row_map(const std::vector<int64_t>& kept, int64_t k_out, bool compact, const at::Device& device) {
  std::vector<int32_t> map(k_out, -1);
  for (size_t r = 0; r < kept.size(); ++r) map[compact ? r : kept[r]] = int32_t(r);
  return at::tensor(map, at::TensorOptions().dtype(at::kInt)).to(device);
}
}  // namespace

at::Tensor int8_conv2d_cuda(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, const std::optional<at::Tensor>& keep,
                            bool compact, const EpilogueArgs& epi) {
  const auto plan = validate_int8_conv2d(x, w, stride, padding, dilation, keep);
  const auto& g = plan.g;
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t R = static_cast<int64_t>(plan.kept.size());
  const int64_t K_out = compact ? R : g.K;
  auto ep = Epilogue::make("cmn::int8_conv2d", epi, g.N, K_out, {g.HO, g.WO}, x.options(), BitEncoding::PM1);
  if (ep.out.numel() == 0) return ep.out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto s = cuda::conv_shape(g, ceil_div(g.C, 4));
  auto acc = at::empty({g.N, R, s.P()}, x.options().dtype(at::kInt));
  if (R > 0) {
    at::Tensor w_kept = w;
    if (!plan.w_compacted && R != g.K) {
      const auto idx = at::tensor(plan.kept, at::TensorOptions().dtype(at::kLong)).to(w.device());
      w_kept = w.index_select(0, idx);
    }
    const auto xw = nhwc_words(x), ww = nhwc_words(w_kept);  // ww: rows [R, kh * kw * Cp]
    cuda::igemm(plan.x_unsigned ? cuda::MmaKind::U8S8 : cuda::MmaKind::S8S8,
                reinterpret_cast<const uint32_t*>(xw.data_ptr()), reinterpret_cast<const uint32_t*>(ww.data_ptr()),
                acc.data_ptr<int32_t>(), s, int(R), stream);
  }
  const bool identity = R == K_out;
  cuda::run_epilogue(ep, acc, identity ? at::Tensor() : row_map(plan.kept, K_out, compact, x.device()),
                     cuda::BinaryFix{}, stream);
  return ep.out;
}

}  // namespace cmn
