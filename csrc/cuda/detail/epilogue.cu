#include "cuda/detail/epilogue.cuh"
#include "cuda/detail/shape.cuh"

#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace cmn::cuda {
namespace {

struct Params {
  const int32_t* acc;
  int64_t R, N, K, P;
  const int32_t* row_of_channel;
  const float* scale;
  const float* bias;
  bool relu;
  float out_scale;
  bool bits_pm1;
  BinaryFix fix;
};

// row = n * P + pix; acc is [N, R, P] (cuda/detail/igemm.cuh)
__device__ __forceinline__ int32_t value(const Params& p, int64_t row, int64_t k) {
  const int64_t r = p.row_of_channel ? p.row_of_channel[k] : k;
  if (r < 0) return 0;
  const int64_t n = row / p.P, pix = row - n * p.P;
  const int32_t a = p.acc[(n * p.R + r) * p.P + pix];
  const BinaryFix& f = p.fix;
  if (f.mode == BinaryFix::PM1) {
    // sum (1 - 2 xb)(1 - 2 wb) over valid taps = n - 2 popc(x) - 2 popc(w) + 4 popc(x AND w)
    const int taps = f.s.KH * f.s.KW;
    const int32_t nvalid = f.row_nvalid[row];
    int32_t wpop = f.w_total[r];
    if (nvalid < taps) {  // border pixel: drop the filter bits of the taps outside the frame
      const int ho = int(pix / f.s.Wo), wo = int(pix % f.s.Wo);
      for (int kh = 0; kh < f.s.KH; ++kh) {
        const int hi = ho * f.s.sh - f.s.ph + kh * f.s.dh;
        for (int kw = 0; kw < f.s.KW; ++kw) {
          const int wi = wo * f.s.sw - f.s.pw + kw * f.s.dw;
          if (hi < 0 || hi >= f.s.H || wi < 0 || wi >= f.s.W) wpop -= f.w_tap_pop[r * taps + kh * f.s.KW + kw];
        }
      }
    }
    return nvalid * f.C - 2 * f.row_xpop[row] - 2 * wpop + 4 * a;
  }
  if (f.mode == BinaryFix::Zero1) return 2 * a - f.row_xpop[row];  // popc(x AND w+) - popc(x AND w-)
  return a;
}

// One rounding per operation, as on the CPU: explicit _rn intrinsics keep nvcc from fusing into an FMA.
__device__ __forceinline__ float affine(const Params& p, int32_t v, int64_t k) {
  float y = static_cast<float>(v);
  if (p.scale) y = __fmul_rn(y, p.scale[k]);
  if (p.bias) y = __fadd_rn(y, p.bias[k]);
  if (p.relu) y = (y < 0.f) ? 0.f : y;  // std::max(y, 0.f) of the CPU path, -0.0 included
  return y;
}

template <typename Out, int KIND>  // KIND: 0 int, 1 float, 2 int8, 3 uint8
__global__ void values_kernel(Params p, Out* __restrict__ out) {
  const int64_t total = p.N * p.K * p.P;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pix = i % p.P, k = (i / p.P) % p.K, n = i / (p.P * p.K);
    const int32_t v = value(p, n * p.P + pix, k);
    if constexpr (KIND == 0) {
      out[i] = v;
    } else {
      const float y = affine(p, v, k);
      if constexpr (KIND == 1) {
        if constexpr (std::is_same_v<Out, __half>) out[i] = __float2half_rn(y);
        else if constexpr (std::is_same_v<Out, __nv_bfloat16>) out[i] = __float2bfloat16_rn(y);
        else out[i] = y;
      } else {
        const float q = rintf(__fdiv_rn(y, p.out_scale));  // round half to even, like std::nearbyint
        if constexpr (KIND == 2) out[i] = static_cast<int8_t>(fminf(fmaxf(q, -128.f), 127.f));
        else out[i] = static_cast<uint8_t>(fminf(fmaxf(q, 0.f), 255.f));
      }
    }
  }
}

__global__ void bits_kernel(Params p, uint32_t* __restrict__ out) {
  const int64_t words = (p.K + 31) / 32, total = p.N * p.P * words;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / words, word = i % words;
    uint32_t bits = 0;
    for (int b = 0; b < 32; ++b) {
      const int64_t k = word * 32 + b;
      if (k >= p.K) break;
      const float y = affine(p, value(p, row, k), k);
      if (p.bits_pm1 ? (y < 0.f) : (y >= 0.5f)) bits |= 1u << b;
    }
    out[i] = bits;
  }
}

}  // namespace

void run_epilogue(const Epilogue& e, const at::Tensor& acc, const at::Tensor& row_of_channel, const BinaryFix& fix,
                  cudaStream_t stream) {
  const int64_t N = e.out.size(0);
  if (e.out.numel() == 0) return;
  Params p{acc.data_ptr<int32_t>(), acc.size(1), N, e.K, e.P,
           row_of_channel.defined() ? row_of_channel.data_ptr<int32_t>() : nullptr,
           e.scale.defined() ? e.scale.data_ptr<float>() : nullptr,
           e.bias.defined() ? e.bias.data_ptr<float>() : nullptr, e.relu, e.out_scale,
           e.bits_encoding == BitEncoding::PM1, fix};
  const unsigned blocks = grid_for(e.kind == OutKind::Bits ? N * e.P * ((e.K + 31) / 32) : N * e.K * e.P);
  switch (e.kind) {
    case OutKind::Int:
      values_kernel<int32_t, 0><<<blocks, 256, 0, stream>>>(p, e.out.data_ptr<int32_t>());
      break;
    case OutKind::Float:
      if (e.float_dtype == at::kFloat)
        values_kernel<float, 1><<<blocks, 256, 0, stream>>>(p, e.out.data_ptr<float>());
      else if (e.float_dtype == at::kHalf)
        values_kernel<__half, 1><<<blocks, 256, 0, stream>>>(p, reinterpret_cast<__half*>(e.out.data_ptr()));
      else
        values_kernel<__nv_bfloat16, 1><<<blocks, 256, 0, stream>>>(p, reinterpret_cast<__nv_bfloat16*>(e.out.data_ptr()));
      break;
    case OutKind::Int8:
      values_kernel<int8_t, 2><<<blocks, 256, 0, stream>>>(p, e.out.data_ptr<int8_t>());
      break;
    case OutKind::Uint8:
      values_kernel<uint8_t, 3><<<blocks, 256, 0, stream>>>(p, e.out.data_ptr<uint8_t>());
      break;
    case OutKind::Bits:
      bits_kernel<<<blocks, 256, 0, stream>>>(p, reinterpret_cast<uint32_t*>(e.out.data_ptr<int32_t>()));
      break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cmn::cuda
