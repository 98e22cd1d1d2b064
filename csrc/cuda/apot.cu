#include "common/validate.h"
#include "cuda/not_implemented.cuh"
#include "ops.h"

namespace cmn {

at::Tensor apot_matmul_cuda(const at::Tensor& a_packed, const at::Tensor& a_levels, const at::Tensor& b_packed,
                            const at::Tensor& b_levels, int64_t k, std::string_view method, const EpilogueArgs& epi) {
  validate_apot_matmul(a_packed, a_levels, b_packed, b_levels, k, method);
  CMN_CUDA_NOT_IMPLEMENTED("cmn::apot_matmul");
}

at::Tensor apot_conv2d_cuda(const at::Tensor& x_packed, const at::Tensor& x_levels, const at::Tensor& w_packed,
                            const at::Tensor& w_levels, int64_t in_channels, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, std::string_view method,
                            const EpilogueArgs& epi) {
  validate_apot_conv2d(x_packed, x_levels, w_packed, w_levels, in_channels, stride, padding, dilation, method);
  CMN_CUDA_NOT_IMPLEMENTED("cmn::apot_conv2d");
}

}  // namespace cmn
