#include "common/validate.h"
#include "cuda/not_implemented.cuh"
#include "ops.h"

namespace cmn {

at::Tensor binary_conv2d_cuda(const at::Tensor& x_bits, const at::Tensor& w_bits, int64_t in_channels,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                              std::string_view encoding, const EpilogueArgs& epi) {
  validate_binary_conv2d(x_bits, w_bits, in_channels, stride, padding, dilation, encoding);
  CMN_CUDA_NOT_IMPLEMENTED("cmn::binary_conv2d");
}

}  // namespace cmn
