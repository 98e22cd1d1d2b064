#include "common/validate.h"
#include "cuda/not_implemented.cuh"
#include "ops.h"

namespace cmn {

at::Tensor int8_conv2d_cuda(const at::Tensor& x, const at::Tensor& w, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, const std::optional<at::Tensor>& keep,
                            bool compact, const EpilogueArgs& epi) {
  validate_int8_conv2d(x, w, stride, padding, dilation, keep);
  CMN_CUDA_NOT_IMPLEMENTED("cmn::int8_conv2d");
}

}  // namespace cmn
