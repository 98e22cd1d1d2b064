// Int8 convolution with masked filters on CUDA: only the rows of `w` become GEMM columns (the kept filters
// when w is compacted, so pruned filters cost nothing), computed as an implicit GEMM on the int8 tensor cores
// (s8 x s8, or u8 x s8 for uint8 activations); pruned channels are dropped (compact=True) or go through the
// epilogue with acc = 0. A keep mask on the device stays there: the channel map is built on the device
// (no host synchronisation, so the op can be captured in a CUDA graph). Outside a capture the number of kept
// filters is still checked against w's rows (one synchronisation).
#include "common/epilogue.h"
#include "common/validate.h"
#include "cuda/detail/epilogue.cuh"
#include "cuda/detail/shape.cuh"
#include "ops.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace cmn {

namespace {
// [N, C, H, W] -> [N, H, W, Cp] with Cp = C rounded up to whole 32-bit words (zero channels added).
at::Tensor nhwc_words(const at::Tensor& t) {
  const int64_t C = t.size(1), Cp = ceil_div(C, 4) * 4;
  return at::constant_pad_nd(t.permute({0, 2, 3, 1}), {0, Cp - C}).contiguous();
}

bool capturing() { return c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None; }
}  // namespace

at::Tensor int8_conv2d_cuda(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, const std::optional<at::Tensor>& keep,
                            bool compact, const EpilogueArgs& epi, const std::optional<at::Tensor>& prepacked) {
  const char* op = "cmn::int8_conv2d";
  const bool masked = keep.has_value() && keep->defined();
  const auto plan = validate_int8_conv2d(x, w, stride, padding, dilation, keep, /*read_keep=*/false);
  const auto& g = plan.g;
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor rows = w, map;  // map: int32 [K_out] output channel -> computed row (-1: pruned), or undefined
  if (masked) {
    const auto k32 = keep->to(at::kInt);
    if (plan.w_compacted) {
      if (!capturing()) {
        const int64_t kept = k32.sum().item<int64_t>();
        TORCH_CHECK_VALUE(kept == w.size(0), op, ": argument 'keep' has ", g.K, " entries (", kept,
                          " kept) but 'w' has ", w.size(0), " filters; expected either all ", g.K,
                          " filters or the ", kept, " kept ones (compacted)");
      }
      if (!compact) map = at::where(*keep, at::cumsum(k32, 0, at::kInt) - 1, -1).to(at::kInt);
    } else if (compact) {
      TORCH_CHECK_VALUE(!capturing(), op, ": compact=True with all ", g.K, " filters in 'w' needs the number of "
                        "kept filters on the host, which a CUDA graph capture cannot read; pass the kept filters "
                        "only (compacted weights)");
      rows = w.index_select(0, at::nonzero(*keep).flatten());
    } else {
      map = at::where(*keep, at::arange(g.K, k32.options()), -1).to(at::kInt);
    }
  }
  const int64_t R = rows.size(0);
  const int64_t K_out = compact ? R : g.K;
  auto ep = Epilogue::make(op, epi, g.N, K_out, {g.HO, g.WO}, x.options(), BitEncoding::PM1);
  if (ep.out.numel() == 0) return ep.out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto s = cuda::conv_shape(g, ceil_div(g.C, 4));
  auto acc = at::empty({g.N, R, s.P()}, x.options().dtype(at::kInt));
  if (R > 0) {
    const auto xw = nhwc_words(x), ww = nhwc_words(rows);  // ww: rows [R, kh * kw * Cp]
    cuda::igemm(plan.x_unsigned ? cuda::MmaKind::U8S8 : cuda::MmaKind::S8S8,
                reinterpret_cast<const uint32_t*>(xw.data_ptr()), reinterpret_cast<const uint32_t*>(ww.data_ptr()),
                acc.data_ptr<int32_t>(), s, int(R), stream);
  }
  cuda::run_epilogue(ep, acc, map, cuda::BinaryFix{}, stream);
  return ep.out;
}

}  // namespace cmn
