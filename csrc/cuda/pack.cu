#include "common/validate.h"
#include "cuda/not_implemented.cuh"
#include "ops.h"

namespace cmn {

at::Tensor pack_bits_cuda(const at::Tensor& x, std::string_view encoding) {
  validate_pack_bits(x, encoding);
  CMN_CUDA_NOT_IMPLEMENTED("cmn::pack_bits");
}

at::Tensor pack_int4_cuda(const at::Tensor& codes) {
  validate_pack_int4(codes);
  CMN_CUDA_NOT_IMPLEMENTED("cmn::pack_int4");
}

}  // namespace cmn
