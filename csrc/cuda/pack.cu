// pack_bits / pack_int4 on CUDA: one thread per output word / byte.
#include "common/checks.h"
#include "common/validate.h"
#include "cuda/detail/shape.cuh"
#include "ops.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace cmn {
namespace {

template <typename T>
__global__ void pack_bits_kernel(const T* __restrict__ x, uint32_t* __restrict__ out, int64_t A, int64_t C,
                                 int64_t HW, int64_t Cw, bool pm1) {
  const int64_t total = A * HW * Cw;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t word = i % Cw, pix = (i / Cw) % HW, a = i / (Cw * HW);
    uint32_t bits = 0;
    for (int b = 0; b < 32; ++b) {
      const int64_t c = word * 32 + b;
      if (c >= C) break;
      // half / bfloat16 widen exactly to float; float and double compare in their own precision
      const at::opmath_type<T> v = x[(a * C + c) * HW + pix];
      if (pm1 ? (v < 0) : (v >= 0.5)) bits |= 1u << b;
    }
    out[i] = bits;
  }
}

__global__ void pack_int4_kernel(const uint8_t* __restrict__ codes, uint8_t* __restrict__ out, int64_t rows,
                                 int64_t L, int64_t Lb) {
  const int64_t total = rows * Lb;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / Lb, j = i % Lb;
    const uint8_t* src = codes + r * L;
    const uint8_t lo = src[2 * j];
    const uint8_t hi = 2 * j + 1 < L ? src[2 * j + 1] : 0;
    out[i] = static_cast<uint8_t>(lo | (hi << 4));
  }
}

}  // namespace

using cuda::grid_for;

at::Tensor pack_bits_cuda(const at::Tensor& x_in, std::string_view encoding) {
  const auto enc = validate_pack_bits(x_in, encoding);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous();
  const int64_t A = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), Cw = ceil_div(C, 32);
  auto out = at::empty({A, x.size(2), x.size(3), Cw}, x.options().dtype(at::kInt));
  if (out.numel() == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pack_bits_cuda", [&] {
    pack_bits_kernel<scalar_t><<<grid_for(out.numel()), 256, 0, stream>>>(
        x.data_ptr<scalar_t>(), reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>()), A, C, HW, Cw,
        enc == BitEncoding::PM1);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor pack_int4_cuda(const at::Tensor& codes_in) {
  validate_pack_int4(codes_in);
  const c10::cuda::CUDAGuard guard(codes_in.device());
  const auto codes = codes_in.contiguous();
  const int64_t L = codes.size(-1), Lb = ceil_div(L, 2);
  const int64_t rows = L == 0 ? 0 : codes.numel() / L;
  auto shape = codes.sizes().vec();
  shape.back() = Lb;
  auto out = at::empty(shape, codes.options());
  if (codes.numel() == 0) return out;
  check_int4_codes_on_device(codes);
  pack_int4_kernel<<<grid_for(out.numel()), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
      codes.data_ptr<uint8_t>(), out.data_ptr<uint8_t>(), rows, L, Lb);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace cmn
